//! The one tokio task that owns the watch's state: it takes the file system's events, the
//! caller's commands and its own timers, reads files on the blocking pool, and sends
//! [`FileEvent`]s.

use super::observe::{
    dir_ident, observe, parse_file_name, DirIdent, FileKind, Job, MetaKey, Observation, ResultState,
};
use super::{Command, FileEvent, WatchOptions};
use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;

/// The most untracked results remembered (to report each once); past it the memory is cleared.
const MAX_UNTRACKED: usize = 4096;
/// The shortest fallback period accepted (protects against a zero `rescan_every`).
const MIN_RESCAN: Duration = Duration::from_millis(10);

/// What we know about a tracked id.
#[derive(Default)]
struct Tracked {
    started_reported: bool,
    result: ResultState,
    progress_reported: Option<(i64, Option<String>)>,
    progress_seen: Option<MetaKey>,
}

/// The task that owns the state.
pub(super) struct WatchTask {
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
    pub(super) fn new(
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
    pub(super) fn watch_dir(&mut self) -> io::Result<()> {
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

    pub(super) async fn run(
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
            enqueue(jobs, queued, id, kind);
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
                if wanted {
                    enqueue(&mut jobs, &mut queued, id, kind);
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

/// Queue a read of task `id`'s `kind` file, unless one is queued already.
fn enqueue(jobs: &mut Vec<Job>, queued: &mut HashSet<(String, FileKind)>, id: &str, kind: FileKind) {
    if queued.insert((id.to_owned(), kind)) {
        jobs.push(Job {
            id: id.to_owned(),
            kind,
            skip_if: None,
        });
    }
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
    use crate::relay::watch::ResultContent;
    use tokio::sync::mpsc;

    /// A fresh folder (removed when dropped) and options that check tracked ids every 100 ms.
    fn checked_often() -> (tempfile::TempDir, WatchOptions) {
        let dir = tempfile::tempdir().unwrap();
        let opts = WatchOptions {
            rescan_every: Duration::from_millis(100),
            ..WatchOptions::new(dir.path())
        };
        (dir, opts)
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
        let (tmp, opts) = checked_often();
        let dir = tmp.path();
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
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("t.progress"), r#"{"progress":3}"#).unwrap();
        assert_eq!(
            wait(&mut events).await,
            FileEvent::Progress {
                task_id: "t".into(),
                progress: 3,
                message: None
            }
        );
    }

    #[tokio::test]
    async fn no_timer_when_nothing_is_tracked() {
        let dir = tempfile::tempdir().unwrap();
        let (event_tx, _events) = mpsc::unbounded_channel();
        let (fs_tx, _fs_rx) = mpsc::unbounded_channel();
        let mut task = WatchTask::new(WatchOptions::new(dir.path()), event_tx, fs_tx);
        task.watch_dir().unwrap();
        assert_eq!(task.next_deadline(), None);
        task.handle_commands(vec![Command::Track("a".into()), Command::Track("b".into())])
            .await;
        assert!(task.next_deadline().is_some());
        task.handle_commands(vec![Command::Untrack("a".into())]).await;
        assert!(task.next_deadline().is_some());
        task.handle_commands(vec![Command::Untrack("b".into())]).await;
        assert_eq!(task.next_deadline(), None);
    }

    /// Without a file system watch (as when inotify instances are used up): nothing runs while
    /// nothing is tracked, and a tracked result is found by the periodic check alone.
    #[tokio::test]
    async fn polling_finds_results_and_sleeps_while_idle() {
        let (dir, opts) = checked_often();
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
        std::fs::write(dir.path().join("p.json"), r#"{"status":"success"}"#).unwrap();
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
    }
}
