//! `TaskStore`: queue.json, written crash-safely, read without ever losing a task silently.
//!
//! The file keeps the Node sidecar's shape, `{"active": task, "recovering": task}` (2-space
//! pretty JSON), plus `pending` for tasks accepted while another was in progress. A write goes to
//! a temp file in the same folder, is fsync'd, renamed over queue.json, and the folder is fsync'd,
//! so a crash leaves either the old file or the new one. A file that cannot be parsed is moved
//! aside to `queue.json.corrupt-<timestamp>`, never treated as empty.

use super::task::{check_task_id, TaskRecord};
use crate::event_log::iso8601;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The largest queue.json read (a few tasks are a few KiB).
pub const MAX_QUEUE_BYTES: u64 = 64 << 20;

/// The file's JSON shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueFile {
    /// The task being worked on (Node: the only one).
    #[serde(default)]
    pub active: Option<TaskRecord>,
    /// Node: the task found active at the last start. Read, never written (always null).
    #[serde(default)]
    pub recovering: Option<TaskRecord>,
    /// Tasks held besides the active one (accepted while busy, or awaiting acknowledgement).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<TaskRecord>,
}

/// A queue.json that could not be used and was moved aside.
#[derive(Debug, Clone, PartialEq)]
pub struct MovedAside {
    /// Where the file now is.
    pub moved_to: PathBuf,
    /// What was wrong with it.
    pub error: String,
}

/// What loading found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Loaded {
    /// The held tasks, active first.
    pub tasks: Vec<TaskRecord>,
    /// Set when the file was corrupt and moved aside.
    pub moved_aside: Option<MovedAside>,
}

/// Reads and writes queue.json.
#[derive(Debug, Clone)]
pub struct TaskStore {
    path: PathBuf,
}

impl TaskStore {
    /// The store at `path` (usually `queue.json` beside config.json).
    pub fn new(path: impl Into<PathBuf>) -> TaskStore {
        TaskStore { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Load the held tasks. A missing file is an empty queue; a corrupt one is moved aside
    /// (reported in [`Loaded::moved_aside`]); an error is returned only when the file can be
    /// neither read nor moved aside, and then the sidecar must not start.
    pub fn load(&self) -> Result<Loaded, String> {
        let problem = match fs::metadata(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::default()),
            Err(e) => format!("cannot read it: {e}"),
            Ok(meta) if meta.len() > MAX_QUEUE_BYTES => {
                format!(
                    "it is {} bytes, over the {MAX_QUEUE_BYTES}-byte limit",
                    meta.len()
                )
            }
            Ok(_) => match read(&self.path) {
                Err(e) => format!("cannot read it: {e}"),
                Ok(bytes) => match parse(&bytes) {
                    Ok(tasks) => {
                        return Ok(Loaded {
                            tasks,
                            moved_aside: None,
                        })
                    }
                    Err(e) => e,
                },
            },
        };
        let stamp = iso8601(SystemTime::now()).replace(':', "-");
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".corrupt-{stamp}"));
        let moved_to = self.path.with_file_name(name);
        match fs::rename(&self.path, &moved_to) {
            Ok(()) => Ok(Loaded { tasks: vec![], moved_aside: Some(MovedAside { moved_to, error: problem }) }),
            Err(e) => Err(format!(
                "{}: {problem}, and it cannot be moved aside ({e})\nhelp: fix its permissions, or move it away yourself; the sidecar will not start without knowing what tasks it held",
                self.path.display()
            )),
        }
    }

    /// Persist `tasks` (active first) atomically and durably.
    pub fn save(&self, tasks: &[TaskRecord]) -> io::Result<()> {
        let file = QueueFile {
            active: tasks.first().cloned(),
            recovering: None,
            pending: tasks[1.min(tasks.len())..].to_vec(),
        };
        let mut text = serde_json::to_string_pretty(&file).map_err(io::Error::other)?;
        text.push('\n');
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        crate::files::create_dir_all(&dir)?;
        let mut tmp_name = self.path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = self.path.with_file_name(tmp_name);
        let written = (|| {
            let mut f = crate::files::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        sync_dir(&dir);
        Ok(())
    }
}

/// fsync a folder so a rename in it survives a power cut (Unix; a no-op elsewhere).
pub fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Reads a regular file whole; never blocks on a FIFO (see [`crate::files::open_read`]).
fn read(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    crate::files::open_read(path)?
        .take(MAX_QUEUE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn parse(bytes: &[u8]) -> Result<Vec<TaskRecord>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("it is not UTF-8 text: {e}"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err("it is empty (a truncated write?)".to_owned());
    }
    let file: QueueFile = serde_json::from_str(text).map_err(|e| format!("it is not a valid queue: {e}"))?;
    let mut tasks: Vec<TaskRecord> = Vec::new();
    for record in file.active.into_iter().chain(file.recovering).chain(file.pending) {
        check_task_id(&record.task_id).map_err(|e| format!("it holds a task with a bad id: {e}"))?;
        if !tasks.iter().any(|t| t.task_id == record.task_id) {
            tasks.push(record);
        }
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn temp(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("agentcom-store-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn record(id: &str) -> TaskRecord {
        let frame = json!({"task_id": id, "generation": 1});
        TaskRecord::from_assign(frame.as_object().unwrap(), 0).unwrap()
    }

    #[test]
    fn missing_file_is_an_empty_queue() {
        let dir = temp("missing");
        assert_eq!(
            TaskStore::new(dir.join("queue.json")).load(),
            Ok(Loaded::default())
        );
    }

    #[test]
    fn save_then_load_round_trips_in_the_node_shape() {
        let dir = temp("roundtrip");
        let store = TaskStore::new(dir.join("queue.json"));
        store.save(&[record("a"), record("b")]).unwrap();
        let text = fs::read_to_string(dir.join("queue.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["active"]["task_id"], "a");
        assert_eq!(v["recovering"], serde_json::Value::Null);
        assert_eq!(v["pending"][0]["task_id"], "b");
        assert!(
            text.contains("\n  \"active\": {"),
            "2-space pretty JSON like Node's"
        );
        let loaded = store.load().unwrap();
        assert_eq!(loaded.tasks, vec![record("a"), record("b")]);
        store.save(&[]).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("queue.json")).unwrap(),
            "{\n  \"active\": null,\n  \"recovering\": null\n}\n"
        );
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temp files left: {leftovers:?}");
    }

    #[test]
    fn a_node_queue_with_active_and_recovering_keeps_both() {
        let dir = temp("node");
        let node = json!({"active": {"task_id":"a","description":"x","status":"working","generation":3},
                          "recovering": {"task_id":"b","status":"waking","generation":1}});
        fs::write(
            dir.join("queue.json"),
            serde_json::to_string_pretty(&node).unwrap(),
        )
        .unwrap();
        let loaded = TaskStore::new(dir.join("queue.json")).load().unwrap();
        let ids: Vec<_> = loaded
            .tasks
            .iter()
            .map(|t| (t.task_id.as_str(), t.status.as_str(), t.generation))
            .collect();
        assert_eq!(ids, [("a", "working", 3), ("b", "waking", 1)]);
    }

    #[test]
    fn corrupt_files_are_moved_aside_not_emptied() {
        for (label, content) in [
            ("truncated", "{\"active\": {\"task_id\": \"a\""),
            ("empty", ""),
            ("wrongtype", "[1,2,3]"),
            ("traversal", "{\"active\": {\"task_id\": \"../../etc/passwd\"}}"),
            ("binary", "\u{0}\u{1}garbage"),
        ] {
            let dir = temp(label);
            fs::write(dir.join("queue.json"), content).unwrap();
            let loaded = TaskStore::new(dir.join("queue.json")).load().unwrap();
            let moved = loaded
                .moved_aside
                .unwrap_or_else(|| panic!("{label}: not moved aside"));
            assert!(loaded.tasks.is_empty());
            assert!(!dir.join("queue.json").exists(), "{label}");
            assert_eq!(
                fs::read_to_string(&moved.moved_to).unwrap(),
                content,
                "{label}: content kept"
            );
            assert!(moved
                .moved_to
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("queue.json.corrupt-"));
        }
    }

    #[cfg(unix)]
    #[test]
    fn an_unwritable_folder_is_an_error_and_keeps_the_old_file() {
        use std::os::unix::fs::PermissionsExt;
        if running_as_root() {
            return; // root writes anywhere; the failure cannot be provoked this way
        }
        let dir = temp("readonly");
        let store = TaskStore::new(dir.join("queue.json"));
        store.save(&[record("a")]).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o500)).unwrap();
        assert!(store.save(&[record("b")]).is_err());
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(store.load().unwrap().tasks, vec![record("a")]);
    }

    #[cfg(unix)]
    fn running_as_root() -> bool {
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| {
                o.stdout
                    == b"0
"
            })
            .unwrap_or(false)
    }

    #[test]
    fn save_into_a_missing_path_component_that_is_a_file_fails() {
        let dir = temp("notadir");
        fs::write(dir.join("file"), "x").unwrap();
        let store = TaskStore::new(dir.join("file").join("queue.json"));
        assert!(store.save(&[record("a")]).is_err());
    }
}
