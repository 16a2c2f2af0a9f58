//! The event log: one JSON object per line appended to `log_file`, and a readable line on stdout.
//!
//! The JSON line is a drop-in for the Node sidecar's Phase 1 log: `ts` (ISO 8601 UTC with
//! milliseconds), `event`, `agent_id`, then the event's own fields. Events never carry the token.
//!
//! Here: [`EventLog`] (where each event goes) and [`ConsoleFormat`]. The catalogue of events is in
//! `events`, the log file and its rotation in `file`, time formatting in `time`, and best-effort
//! stdout/stderr with the `outln!`/`out!`/`errln!` macros in [`console`].

pub mod console;
mod events;
mod file;
#[cfg(test)]
mod tests;
mod time;

pub use events::Event;
pub use file::move_node_log_aside;
pub use time::{console_time, human_duration, iso8601, parse_iso8601};

use file::{LogFile, Rotation};
use serde_json::Value;
use std::io;
use std::path::Path;
use std::time::SystemTime;

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
                    crate::errln!(
                        "agentcom-sidecar: cannot write the log file: {e}; events still go to stdout"
                    );
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
