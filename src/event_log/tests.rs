//! The event log's tests: JSON lines, rotation, the Node log move-aside.

use super::file::numbered;
use super::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

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
