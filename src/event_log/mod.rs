//! The event log: one JSON object per line appended to `log_file`, and a readable line on stdout.
//!
//! The JSON line is a drop-in for the Node sidecar's Phase 1 log: `ts` (ISO 8601 UTC with
//! milliseconds), `event`, `agent_id`, then the event's own fields. Events never carry the token.

use serde::Serialize;
use serde_json::Value;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Best-effort console output. `println!` panics when stdout is a closed pipe or a full disk
/// (`cmd | head -2`, `>/dev/full`, journald restarting): these never do. A failed write to stdout
/// is remembered ([`console::stdout_failure`]) so a command can say so on exit; a failed write
/// to stderr is dropped (there is nowhere left to say it).
pub mod console {
    use std::fmt;
    use std::io::{self, Write};
    use std::sync::Mutex;

    static STDOUT_FAILURE: Mutex<Option<String>> = Mutex::new(None);

    /// Write `args` to stdout and flush; the error, if any, is also remembered (the first one).
    pub fn out(args: fmt::Arguments<'_>) -> io::Result<()> {
        let mut stdout = io::stdout().lock();
        let result = stdout.write_fmt(args).and_then(|()| stdout.flush());
        if let Err(e) = &result {
            let mut failure = STDOUT_FAILURE.lock().unwrap_or_else(|e| e.into_inner());
            failure.get_or_insert_with(|| e.to_string());
        }
        result
    }

    /// Write `args` to stderr, ignoring any failure.
    pub fn err(args: fmt::Arguments<'_>) {
        let _ = io::stderr().lock().write_fmt(args);
    }

    /// The first error met writing to stdout in this process, if any.
    pub fn stdout_failure() -> Option<String> {
        STDOUT_FAILURE.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// `println!` that never panics: see [`event_log::console`](crate::event_log::console).
#[macro_export]
macro_rules! outln {
    () => {{
        let _ = $crate::event_log::console::out(format_args!("\n"));
    }};
    ($($arg:tt)*) => {{
        let _ = $crate::event_log::console::out(format_args!("{}\n", format_args!($($arg)*)));
    }};
}

/// `print!` that never panics: see [`event_log::console`](crate::event_log::console).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = $crate::event_log::console::out(format_args!($($arg)*));
    }};
}

/// `eprintln!` that never panics: see [`event_log::console`](crate::event_log::console).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::event_log::console::err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Something worth recording. Serialized with its name under `event`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The daemon started.
    Startup {
        version: String,
        pid: u32,
        config: String,
        hub_url: String,
    },
    /// A config key was accepted but is not used, or is unknown.
    ConfigWarning { message: String },
    /// Opening the WebSocket.
    WsConnecting { url: String, attempt: u32 },
    /// The WebSocket handshake completed.
    WsOpen { url: String },
    /// Connecting failed (refused, DNS, TLS, HTTP upgrade refused...).
    WsConnectError { error: String },
    /// `identify` went out.
    IdentifySent { reason: &'static str },
    /// The hub accepted our identity.
    Identified { hub_agent_id: String },
    /// The hub refused our token: the person must fix the config.
    AuthFailed { error: String, hint: String },
    /// An error frame from the hub.
    HubError { error: String, detail: Option<Value> },
    /// The hub's rate limiter dropped a frame.
    RateLimited { retry_after_ms: u64, tier: String },
    /// The next connection attempt is scheduled.
    ReconnectScheduled {
        delay_ms: u64,
        attempt: u32,
        reason: String,
    },
    /// A deadline passed without an answer: the link is treated as dead.
    HeartbeatTimeout {
        waiting_for: &'static str,
        waited_ms: u64,
    },
    /// The WebSocket closed.
    WsClose { code: Option<u16>, reason: String },
    /// A frame the sidecar could not parse.
    MalformedFrame { error: String },
    /// A well-formed frame the sidecar has no use for.
    UnhandledMessage { message_type: String },
    /// stdout cannot be written (a closed pipe, a full disk): console output is off from here on;
    /// every event still goes to the log file.
    ConsoleOff { error: String },
    /// The log file held the Node sidecar's log (`time`, `severity`, `message`): it was moved aside
    /// so that one file holds one format.
    NodeLogMovedAside { moved_to: String },
    /// The sidecar is stopping.
    Shutdown { signal: String },
    /// queue.json could not be used and was moved aside: its tasks are not lost, but not resumed.
    QueueCorrupt { moved_to: String, error: String },
    /// queue.json could not be written.
    PersistFailed { error: String },
    /// A task held before the restart, to be reported to the hub.
    TaskRecovered {
        task_id: String,
        status: String,
        generation: i64,
    },
    /// A `task_assign` arrived for a new task.
    TaskReceived { task_id: String, generation: i64 },
    /// The task is persisted and `task_accepted` went out.
    TaskAccepted { task_id: String, generation: i64 },
    /// A task was refused with `task_failed` (busy, invalid id, no wake command, disk).
    TaskRefused {
        task_id: String,
        reason: String,
        detail: String,
    },
    /// The hub confirmed a task we hold (task_assign again, task_continue, state_report_ack continue).
    TaskConfirmed {
        task_id: String,
        answer: String,
        generation: i64,
    },
    /// The hub took a task back; it is kept for a while in case it comes back.
    TaskDetached {
        task_id: String,
        answer: String,
        keep_ms: u64,
    },
    /// A detached task was not assigned again in time: the agent was stopped and the task dropped.
    TaskHandedBack { task_id: String },
    /// The hub cancelled a task.
    TaskCancelled { task_id: String },
    /// A wake attempt starts.
    WakeAttempt { task_id: String, attempt: u32 },
    /// A wake attempt ended.
    WakeFinished {
        task_id: String,
        attempt: u32,
        status: String,
        error: Option<String>,
    },
    /// The next wake attempt is scheduled.
    WakeRetryScheduled {
        task_id: String,
        attempt: u32,
        delay_ms: u64,
    },
    /// `{task_id}.started` appeared.
    AgentStarted { task_id: String },
    /// No `.started` within confirmation_timeout_ms.
    ConfirmationTimeout { task_id: String, waited_ms: u64 },
    /// The result file was not a usable JSON object.
    ResultInvalid { task_id: String, error: String },
    /// A result for a task not held was moved to `discarded/`.
    ResultDiscarded { task_id: String, reason: String },
    /// The task has an outcome (it is persisted, then sent).
    TaskOutcome { task_id: String, outcome: String },
    /// The hub acknowledged an outcome.
    OutcomeAcknowledged { task_id: String, status: String },
    /// The hub refused an outcome (stale_generation, invalid_state, not_found).
    OutcomeRefused {
        task_id: String,
        generation: i64,
        reason: String,
    },
    /// More tasks than `max_pending` wait behind the current one; this one is held all the same.
    MaxPendingExceeded {
        task_id: String,
        held: usize,
        max_pending: usize,
    },
    /// queue.json cannot be written: the link is dropped (the hub takes back `task_ids`) and
    /// kept down; queue.json is tried again in `retry_ms`.
    StorageUnwritable {
        error: String,
        task_ids: Vec<String>,
        retry_ms: u64,
    },
    /// queue.json can be written again after the link was held down: connecting.
    StorageWritable { held_down_ms: u64 },
    /// The link is dropped on purpose and kept down (see `storage_unwritable`).
    LinkHeld { reason: String },
    /// A file under a task's name in results_dir is not a regular file (a FIFO, a device...):
    /// it is skipped, never opened.
    FileNotRegular {
        task_id: String,
        file: String,
        kind: String,
    },
    /// results_dir cannot be watched (inotify limits): it is checked every second instead.
    ResultsPolling {
        results_dir: String,
        error: String,
        help: Option<String>,
    },
}

impl Event {
    /// The event's name as written under `event`.
    pub fn name(&self) -> String {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m.get("event").and_then(Value::as_str).unwrap_or("?").to_owned(),
            _ => "?".to_owned(),
        }
    }

    /// A short sentence for a person reading the console.
    pub fn describe(&self) -> String {
        match self {
            Event::Startup {
                version,
                config,
                hub_url,
                ..
            } => {
                format!("agentcom-sidecar {version} starting (config {config}, hub {hub_url})")
            }
            Event::ConfigWarning { message } => format!("warning: {message}"),
            Event::WsConnecting { url, attempt } => format!("connecting to {url} (attempt {attempt})"),
            Event::WsOpen { .. } => "connected; identifying".to_owned(),
            Event::WsConnectError { error } => format!("could not connect: {error}"),
            Event::IdentifySent { reason } => format!("identify sent ({reason})"),
            Event::Identified { hub_agent_id } => format!("identified as {hub_agent_id}"),
            Event::AuthFailed { error, hint } => format!("hub refused the token ({error}): {hint}"),
            Event::HubError { error, .. } => format!("hub error: {error}"),
            Event::RateLimited { retry_after_ms, tier } => {
                format!("rate limited by the hub ({tier} tier), retry in {retry_after_ms} ms")
            }
            Event::ReconnectScheduled {
                delay_ms,
                attempt,
                reason,
            } => {
                format!(
                    "reconnecting in {:.1} s (attempt {attempt}, {reason})",
                    *delay_ms as f64 / 1000.0
                )
            }
            Event::HeartbeatTimeout {
                waiting_for,
                waited_ms,
            } => {
                format!("no {waiting_for} from the hub within {waited_ms} ms: dropping the link")
            }
            Event::WsClose { code, reason } => match code {
                Some(c) if reason.is_empty() => format!("connection closed (code {c})"),
                Some(c) => format!("connection closed (code {c}: {reason})"),
                None => format!("connection lost ({reason})"),
            },
            Event::MalformedFrame { error } => format!("ignored a malformed frame from the hub: {error}"),
            Event::UnhandledMessage { message_type } => format!("ignored a \"{message_type}\" frame"),
            Event::Shutdown { signal } => format!("shutting down ({signal})"),
            Event::ConsoleOff { error } => format!(
                "stdout cannot be written ({error}): console output is off; events still go to the log file"
            ),
            Event::NodeLogMovedAside { moved_to } => format!(
                "the log file held the Node sidecar's log: moved aside to {moved_to}; this file now holds this sidecar's log"
            ),
            Event::QueueCorrupt { moved_to, error } => {
                format!("queue.json was unusable ({error}); moved aside to {moved_to}: inspect it")
            }
            Event::PersistFailed { error } => format!("cannot write queue.json: {error}"),
            Event::TaskRecovered {
                task_id,
                status,
                generation,
            } => {
                format!("found task {task_id} ({status}, generation {generation}) from before the restart")
            }
            Event::TaskReceived { task_id, generation } => {
                format!("task {task_id} assigned (generation {generation})")
            }
            Event::TaskAccepted { task_id, .. } => format!("task {task_id} saved and accepted"),
            Event::TaskRefused {
                task_id,
                reason,
                detail,
            } => format!("refused task {task_id}: {reason} ({detail})"),
            Event::TaskConfirmed {
                task_id,
                answer,
                generation,
            } => {
                format!("the hub confirmed task {task_id} is ours ({answer}, generation {generation})")
            }
            Event::TaskDetached {
                task_id,
                answer,
                keep_ms,
            } => format!(
                "the hub took task {task_id} back ({answer}); keeping it {} s in case it is assigned again",
                keep_ms / 1000
            ),
            Event::TaskHandedBack { task_id } => {
                format!("task {task_id} was not assigned again: agent stopped, task dropped")
            }
            Event::TaskCancelled { task_id } => format!("task {task_id} cancelled by the hub"),
            Event::WakeAttempt { task_id, attempt } => {
                format!("waking the agent for {task_id} (attempt {attempt})")
            }
            Event::WakeFinished {
                task_id,
                attempt,
                status,
                error,
            } => match error {
                Some(e) => format!("wake attempt {attempt} for {task_id}: {status}: {e}"),
                None => format!("wake attempt {attempt} for {task_id}: {status}"),
            },
            Event::WakeRetryScheduled {
                task_id,
                attempt,
                delay_ms,
            } => {
                format!(
                    "retrying the wake for {task_id} in {} s (attempt {attempt})",
                    delay_ms / 1000
                )
            }
            Event::AgentStarted { task_id } => format!("the agent started {task_id}"),
            Event::ConfirmationTimeout { task_id, waited_ms } => {
                format!("no {task_id}.started within {waited_ms} ms: does the agent write it to results_dir?")
            }
            Event::ResultInvalid { task_id, error } => {
                format!("the result for {task_id} is unusable: {error}")
            }
            Event::ResultDiscarded { task_id, reason } => {
                format!("a result for {task_id} was moved to discarded/ ({reason})")
            }
            Event::TaskOutcome { task_id, outcome } => format!("task {task_id} {outcome}"),
            Event::OutcomeAcknowledged { task_id, status } => {
                format!("the hub recorded task {task_id} ({status})")
            }
            Event::OutcomeRefused {
                task_id,
                generation,
                reason,
            } => {
                format!("the hub refused the outcome of {task_id} at generation {generation}: {reason}")
            }
            Event::MaxPendingExceeded {
                task_id,
                held,
                max_pending,
            } => format!(
                "holding task {task_id} beyond max_pending {max_pending} ({held} tasks held): the hub assigned more at once; raise max_pending if this recurs"
            ),
            Event::StorageUnwritable {
                error,
                task_ids,
                retry_ms,
            } => {
                let given_back = if task_ids.is_empty() {
                    String::new()
                } else {
                    format!(" the hub takes back {} without counting a retry;", task_ids.join(", "))
                };
                format!(
                    "cannot write queue.json ({error}): staying disconnected so no task is accepted that cannot be kept;{given_back} trying again in {:.1} s (free disk space or fix the folder's permissions)",
                    *retry_ms as f64 / 1000.0
                )
            }
            Event::StorageWritable { held_down_ms } => format!(
                "queue.json can be written again after {:.1} s: reconnecting",
                *held_down_ms as f64 / 1000.0
            ),
            Event::LinkHeld { reason } => format!("disconnecting and staying away: {reason}"),
            Event::FileNotRegular { file, kind, .. } => {
                format!("skipped {file}: it is {kind}, not a regular file (the agent must write a regular file there)")
            }
            Event::ResultsPolling {
                results_dir,
                error,
                help,
            } => match help {
                Some(help) => format!(
                    "cannot watch results_dir {results_dir} ({error}): checking it every second instead; {help}"
                ),
                None => format!("cannot watch results_dir {results_dir} ({error}): checking it every second instead"),
            },
        }
    }
}

/// ISO 8601 UTC with milliseconds, e.g. `2026-11-25T14:43:09.123Z`.
pub fn iso8601(t: SystemTime) -> String {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// The time of day on the console's text lines, in UTC and marked so: `14:53:26.866Z`.
pub fn console_time(t: SystemTime) -> String {
    iso8601(t)[11..].to_owned()
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

/// One JSON log line: `ts`, `event`, `agent_id`, then the event's fields and `proxy` when given
/// (sorted by name).
fn json_line(agent_id: &str, event: &Event, at: SystemTime, proxy: Option<&str>) -> String {
    let mut line = String::with_capacity(160);
    line.push_str("{\"ts\":");
    line.push_str(&Value::String(iso8601(at)).to_string());
    line.push_str(",\"event\":");
    line.push_str(&Value::String(event.name()).to_string());
    line.push_str(",\"agent_id\":");
    line.push_str(&Value::String(agent_id.to_owned()).to_string());
    if let Ok(Value::Object(mut fields)) = serde_json::to_value(event) {
        if let Some(proxy) = proxy {
            fields.insert("proxy".to_owned(), Value::String(proxy.to_owned()));
        }
        for (k, v) in fields.iter().filter(|(k, _)| k.as_str() != "event") {
            line.push(',');
            line.push_str(&Value::String(k.clone()).to_string());
            line.push(':');
            line.push_str(&v.to_string());
        }
    }
    line.push('}');
    line
}

/// What goes to stdout for each event (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ConsoleFormat {
    /// A readable line: time, event name, a sentence (for journald and people).
    #[default]
    Text,
    /// The same JSON line as the log file (for log shippers).
    Json,
    /// Nothing on stdout.
    Off,
}

impl From<bool> for ConsoleFormat {
    /// `true` is [`ConsoleFormat::Text`], `false` is [`ConsoleFormat::Off`].
    fn from(console: bool) -> ConsoleFormat {
        if console {
            ConsoleFormat::Text
        } else {
            ConsoleFormat::Off
        }
    }
}

/// The default size past which the log file is rotated (10 MiB, as the Node sidecar).
pub const DEFAULT_LOG_MAX_BYTES: u64 = 10 * 1024 * 1024;

/// The default number of rotated files kept (`sidecar.log.1` .. `sidecar.log.5`).
pub const DEFAULT_LOG_KEEP: u32 = 5;

/// Size-based rotation settings of a log file.
#[derive(Debug, Clone, Copy)]
struct Rotation {
    max_bytes: u64,
    keep: u32,
}

/// The open log file, its tracked size and its rotation state.
struct LogFile {
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
fn numbered(path: &Path, n: u32) -> PathBuf {
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
    fn open(path: &Path, rotation: Option<Rotation>) -> io::Result<LogFile> {
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
    fn append(&mut self, line: &[u8]) -> io::Result<()> {
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
                        errln!(
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

/// Writes events to the log file and the console.
pub struct EventLog {
    agent_id: String,
    file: Option<LogFile>,
    console: ConsoleFormat,
    failed_once: bool,
    capture: Option<Captured>,
    /// The proxy the hub connection goes through (`host:port`), added to `ws_connecting`.
    proxy: Option<String>,
}

/// Events kept in memory by [`EventLog::capture`], for tests.
pub type Captured = std::sync::Arc<std::sync::Mutex<Vec<Event>>>;

impl EventLog {
    /// Open (create or append) the log file at `path`, creating its folder. It is never rotated:
    /// see [`EventLog::open_rotating`]. `console` prints the readable text line.
    pub fn open(path: &Path, agent_id: &str, console: bool) -> io::Result<EventLog> {
        Ok(EventLog {
            file: Some(LogFile::open(path, None)?),
            ..EventLog::console_only(agent_id, console)
        })
    }

    /// Open (create or append) the log file at `path`, creating its folder, rotated by size:
    /// when appending a line would take the file past `max_bytes`, `path.{keep-1}` becomes
    /// `path.{keep}` ... and `path` becomes `path.1` (the oldest beyond `keep` is dropped), then the
    /// line goes to a fresh `path`. A line is never split between files; a line longer than
    /// `max_bytes` goes whole into a file of its own. If rotating fails the log keeps appending to
    /// the current file (reported once on stderr) and tries again after another `max_bytes`.
    /// `keep: 0` keeps no old file at all.
    pub fn open_rotating(
        path: &Path,
        agent_id: &str,
        console: ConsoleFormat,
        max_bytes: u64,
        keep: u32,
    ) -> io::Result<EventLog> {
        Ok(EventLog {
            file: Some(LogFile::open(path, Some(Rotation { max_bytes, keep }))?),
            console,
            ..EventLog::console_only(agent_id, false)
        })
    }

    /// A log that only prints to the console (or nowhere).
    pub fn console_only(agent_id: &str, console: bool) -> EventLog {
        EventLog {
            agent_id: agent_id.to_owned(),
            file: None,
            console: ConsoleFormat::from(console),
            failed_once: false,
            capture: None,
            proxy: None,
        }
    }

    /// A log that keeps every event in memory (and prints nothing), for tests.
    pub fn capture(agent_id: &str) -> (EventLog, Captured) {
        let captured = Captured::default();
        let log = EventLog {
            capture: Some(captured.clone()),
            ..EventLog::console_only(agent_id, false)
        };
        (log, captured)
    }

    /// Say on every `ws_connecting` line that the connection goes through the proxy at `proxy`
    /// (`host:port`, never credentials); `None` for a direct connection.
    pub fn set_proxy(&mut self, proxy: Option<String>) {
        self.proxy = proxy;
    }

    /// The JSON line for `event` at time `at` (without the newline).
    pub fn json_line(&self, event: &Event, at: SystemTime) -> String {
        json_line(&self.agent_id, event, at, self.proxy_of(event))
    }

    /// The proxy to name on `event`'s line, if any.
    fn proxy_of(&self, event: &Event) -> Option<&str> {
        match event {
            Event::WsConnecting { .. } => self.proxy.as_deref(),
            _ => None,
        }
    }

    /// Record one event now. A failing log file is reported once on stderr and never stops the sidecar.
    pub fn record(&mut self, event: &Event) {
        if let Some(captured) = &self.capture {
            captured
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(event.clone());
        }
        let now = SystemTime::now();
        let needs_json = self.file.is_some() || self.console == ConsoleFormat::Json;
        let proxy = self.proxy_of(event);
        let mut line = if needs_json {
            json_line(&self.agent_id, event, now, proxy)
        } else {
            String::new()
        };
        let shown = match self.console {
            ConsoleFormat::Text => console::out(format_args!(
                "{} {:<20} {}{}\n",
                console_time(now),
                event.name(),
                event.describe(),
                proxy
                    .map(|p| format!(" through the proxy {p}"))
                    .unwrap_or_default()
            )),
            ConsoleFormat::Json => console::out(format_args!("{line}\n")),
            ConsoleFormat::Off => Ok(()),
        };
        if let Some(file) = &mut self.file {
            line.push('\n');
            if let Err(e) = file.append(line.as_bytes()) {
                if !self.failed_once {
                    self.failed_once = true;
                    errln!("agentcom-sidecar: cannot write the log file: {e}; events still go to stdout");
                }
            }
        }
        if let Err(e) = shown {
            // Once, in the log file: the console stays off for the rest of the run.
            self.console = ConsoleFormat::Off;
            self.record(&Event::ConsoleOff { error: e.to_string() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn iso8601_matches_known_instants() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_539_977_887);
        assert_eq!(iso8601(t), "2026-11-24T17:06:17.887Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(iso8601(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn json_line_has_ts_event_agent_then_fields() {
        let log = EventLog::console_only("a1", false);
        let line = log.json_line(
            &Event::ReconnectScheduled {
                delay_ms: 1500,
                attempt: 2,
                reason: "closed".into(),
            },
            UNIX_EPOCH,
        );
        assert_eq!(
            line,
            r#"{"ts":"1970-01-01T00:00:00.000Z","event":"reconnect_scheduled","agent_id":"a1","attempt":2,"delay_ms":1500,"reason":"closed"}"#
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "reconnect_scheduled");
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("agentcom-log-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn warning(n: usize) -> Event {
        Event::ConfigWarning {
            message: format!("line {n:06}"),
        }
    }

    /// The length of one `warning` line with its newline (all are the same length).
    fn warning_len() -> u64 {
        EventLog::console_only("a1", false)
            .json_line(&warning(0), UNIX_EPOCH)
            .len() as u64
            + 1
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn numbers(path: &Path) -> Vec<usize> {
        lines(path)
            .iter()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("every line is JSON");
                v["message"].as_str().unwrap()[5..].parse().unwrap()
            })
            .collect()
    }

    #[test]
    fn rotates_only_when_a_line_would_pass_max_bytes() {
        let dir = temp_dir("boundary");
        let path = dir.join("sidecar.log");
        let len = warning_len();
        let mut log = EventLog::open_rotating(&path, "a1", ConsoleFormat::Off, 3 * len, 5).unwrap();
        for n in 1..=3 {
            log.record(&warning(n));
        }
        // Exactly max_bytes: no rotation yet.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 * len);
        assert!(!numbered(&path, 1).exists());
        log.record(&warning(4));
        assert_eq!(numbers(&numbered(&path, 1)), [1, 2, 3]);
        assert_eq!(numbers(&path), [4]);

        // One byte less: two lines per file.
        let path = dir.join("tight.log");
        let mut log = EventLog::open_rotating(&path, "a1", ConsoleFormat::Off, 3 * len - 1, 5).unwrap();
        for n in 1..=5 {
            log.record(&warning(n));
        }
        assert_eq!(numbers(&numbered(&path, 2)), [1, 2]);
        assert_eq!(numbers(&numbered(&path, 1)), [3, 4]);
        assert_eq!(numbers(&path), [5]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn size_counts_what_the_file_held_at_open() {
        let dir = temp_dir("reopen");
        let path = dir.join("sidecar.log");
        let len = warning_len();
        let mut log = EventLog::open_rotating(&path, "a1", ConsoleFormat::Off, 2 * len, 3).unwrap();
        log.record(&warning(1));
        log.record(&warning(2));
        drop(log);
        let mut log = EventLog::open_rotating(&path, "a1", ConsoleFormat::Off, 2 * len, 3).unwrap();
        log.record(&warning(3));
        assert_eq!(numbers(&numbered(&path, 1)), [1, 2]);
        assert_eq!(numbers(&path), [3]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn keeps_at_most_keep_old_files() {
        let dir = temp_dir("keep");
        let path = dir.join("sidecar.log");
        let len = warning_len();
        let mut log = EventLog::open_rotating(&path, "a1", ConsoleFormat::Off, 2 * len, 2).unwrap();
        for n in 1..=20 {
            log.record(&warning(n));
        }
        assert_eq!(numbers(&path), [19, 20]);
        assert_eq!(numbers(&numbered(&path, 1)), [17, 18]);
        assert_eq!(numbers(&numbered(&path, 2)), [15, 16]);
        assert!(!numbered(&path, 3).exists());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3);

        // keep 0: no old file at all.
        let path = dir.join("none.log");
        let mut log = EventLog::open_rotating(&path, "a1", ConsoleFormat::Off, 2 * len, 0).unwrap();
        for n in 1..=5 {
            log.record(&warning(n));
        }
        assert_eq!(numbers(&path), [5]);
        assert!(!numbered(&path, 1).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_line_is_lost_split_or_duplicated_across_rotations() {
        let dir = temp_dir("nolost");
        let path = dir.join("sidecar.log");
        let max = 700;
        let keep = 50;
        let mut log = EventLog::open_rotating(&path, "a1", ConsoleFormat::Off, max, keep).unwrap();
        let n = 120;
        for i in 1..=n {
            // Lines of varying length, so the boundary falls anywhere.
            log.record(&Event::WsConnectError {
                error: format!("{i} {}", "x".repeat(i % 37)),
            });
        }
        let rotated = (1..=keep).filter(|k| numbered(&path, *k).exists()).count();
        assert!(rotated >= 3, "only {rotated} rotations");
        let mut seen = Vec::new();
        for file in (1..=keep).rev().map(|k| numbered(&path, k)).chain([path.clone()]) {
            if !file.exists() {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(
                text.len() as u64 <= max,
                "{} holds {} bytes",
                file.display(),
                text.len()
            );
            assert!(text.ends_with('\n'), "{} ends mid-line", file.display());
            for line in text.lines() {
                let v: Value = serde_json::from_str(line).expect("every line is whole JSON");
                let error = v["error"].as_str().unwrap();
                seen.push(error.split(' ').next().unwrap().parse::<usize>().unwrap());
            }
        }
        // Each line once, in order, oldest file first.
        assert_eq!(seen, (1..=n).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_rotation_keeps_appending_and_recovers() {
        let dir = temp_dir("fail");
        let path = dir.join("sidecar.log");
        // A non-empty folder where the rotated file must go: neither removable nor a rename
        // target, even for root.
        std::fs::create_dir_all(numbered(&path, 1).join("blocker")).unwrap();
        let len = warning_len();
        let mut log = EventLog::open_rotating(&path, "a1", ConsoleFormat::Off, 2 * len, 1).unwrap();
        for n in 1..=5 {
            log.record(&warning(n));
        }
        assert_eq!(numbers(&path), [1, 2, 3, 4, 5]);
        assert!(!log.failed_once, "writing never failed");
        // Once the obstacle is gone, rotation resumes (after another max_bytes).
        std::fs::remove_dir_all(numbered(&path, 1)).unwrap();
        for n in 6..=7 {
            log.record(&warning(n));
        }
        assert_eq!(numbers(&numbered(&path, 1)), [1, 2, 3, 4, 5, 6]);
        assert_eq!(numbers(&path), [7]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn console_time_is_marked_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_539_977_887);
        assert_eq!(console_time(t), "17:06:17.887Z");
    }

    #[test]
    fn only_a_node_log_is_moved_aside() {
        let dir = temp_dir("node");
        let path = dir.join("sidecar.log");
        // Absent, empty, or this sidecar's own lines: left alone.
        assert_eq!(move_node_log_aside(&path).unwrap(), None);
        std::fs::write(&path, "").unwrap();
        assert_eq!(move_node_log_aside(&path).unwrap(), None);
        let ours = "{\"ts\":\"2026-01-01T00:00:00.000Z\",\"event\":\"startup\",\"agent_id\":\"a\"}\n";
        std::fs::write(&path, ours).unwrap();
        assert_eq!(move_node_log_aside(&path).unwrap(), None);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), ours);
        // The Node sidecar's lines (even with a torn last line): moved, content intact.
        let node = "{\"time\":\"2026-01-01T00:00:00.000Z\",\"severity\":\"info\",\"message\":\"startup\",\"agent_id\":\"a\"}\n\
                    {\"time\":\"2026-01-01T00:00:01.000Z\",\"severity\":\"info\",\"message\":\"identified\"}\n{\"time\":";
        std::fs::write(&path, node).unwrap();
        let moved = move_node_log_aside(&path).unwrap().expect("moved");
        assert!(!path.exists());
        let name = moved.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("sidecar.log.node-20"), "{name}");
        assert!(name.ends_with('Z') && !name.contains(':'), "{name}");
        assert_eq!(std::fs::read_to_string(&moved).unwrap(), node);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn open_appends_without_rotating() {
        let dir = temp_dir("plain");
        let path = dir.join("sidecar.log");
        let mut log = EventLog::open(&path, "a1", false).unwrap();
        for n in 1..=50 {
            log.record(&warning(n));
        }
        assert_eq!(numbers(&path), (1..=50).collect::<Vec<_>>());
        assert!(!numbered(&path, 1).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
