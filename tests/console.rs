//! The console is best effort: a closed or full stdout never stops the daemon (its log file has
//! every event), and other commands say their output was lost instead of panicking. And the first
//! start over the Node sidecar's log moves that log aside instead of mixing two formats.

#![cfg(unix)]

mod support;

use serde_json::json;
use std::fs::File;
use std::process::Stdio;
use std::time::Duration;
use support::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Where the daemon's stdout (and stderr) go in each case.
#[derive(Clone, Copy, Debug)]
enum Console {
    /// A pipe whose reader is gone (`run ... | head -2` once head has exited).
    ClosedPipe,
    /// A file that is always full (`>/dev/full`).
    DevFull,
    /// stdout and stderr both closed pipes.
    BothClosed,
}

fn dev_full() -> File {
    File::options().write(true).open("/dev/full").unwrap()
}

#[tokio::test]
async fn a_closed_or_full_stdout_does_not_stop_the_daemon() {
    for case in [Console::ClosedPipe, Console::DevFull, Console::BothClosed] {
        let agent = format!("console-{}", format!("{case:?}").to_lowercase());
        let HubSetup {
            hub: _hub,
            mut events,
            dir,
            ..
        } = HubSetup::start(&agent, json!({})).await;
        let mut command = binary();
        command
            .args(["run", "--config"])
            .arg(dir.join("config.json"))
            .env_remove("INVOCATION_ID")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null());
        match case {
            Console::ClosedPipe => command
                .stdout(Stdio::piped())
                .stderr(File::create(dir.join("stderr.txt")).unwrap()),
            Console::DevFull => command
                .stdout(dev_full())
                .stderr(File::create(dir.join("stderr.txt")).unwrap()),
            Console::BothClosed => command.stdout(Stdio::piped()).stderr(Stdio::piped()),
        };
        let mut child = command.spawn().unwrap();
        // Close the reading ends: every write to them now fails with EPIPE.
        drop(child.stdout.take());
        drop(child.stderr.take());
        let mut sidecar = Sidecar {
            child,
            dir: dir.path().to_owned(),
        };
        wait_hub(&mut events, SECS(10), "identified", identified(&agent)).await;
        sidecar
            .wait_log_event("identified", SECS(5))
            .await
            .unwrap_or_else(|| panic!("{case:?}: no identified in the log: {:?}", sidecar.log_events()));
        sidecar.signal("TERM");
        let status = sidecar.wait_exit(SECS(2)).await;
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "{case:?}: {status:?}; stderr: {}",
            sidecar.stderr()
        );
        wait_hub(&mut events, SECS(2), "close 1000", closed_by_sidecar).await;
        let log = sidecar.log_events();
        let names: Vec<&str> = log.iter().filter_map(|e| e["event"].as_str()).collect();
        for expected in ["startup", "ws_connecting", "identified", "shutdown"] {
            assert!(names.contains(&expected), "{case:?}: no {expected} in {names:?}");
        }
        let off: Vec<_> = log.iter().filter(|e| e["event"] == "console_off").collect();
        assert_eq!(off.len(), 1, "{case:?}: {names:?}");
        assert!(!off[0]["error"].as_str().unwrap().is_empty(), "{off:?}");
        let shutdown = log.iter().find(|e| e["event"] == "shutdown").unwrap();
        assert_eq!(shutdown["signal"], "SIGTERM");
        assert!(!sidecar.stderr().contains("panicked"), "{}", sidecar.stderr());
    }
}

#[test]
fn other_commands_say_their_output_was_lost() {
    let dir = TempDir::new("console-status");
    let config = dir.join("config.json");
    write_private(
        &config,
        &config_json(
            "console-status",
            "a-token-of-sixteen-chars",
            "ws://127.0.0.1:9/ws",
            json!({}),
        ),
    );
    for args in [
        vec!["status", "--config"],
        vec!["service", "print", "--platform", "linux", "--config"],
    ] {
        let out = binary()
            .args(&args)
            .arg(&config)
            .stdout(dev_full())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("error: cannot write to stdout") && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
    }
}

#[tokio::test]
async fn the_first_start_over_a_node_log_moves_it_aside_once() {
    let agent = "console-node-log";
    let HubSetup { hub: _hub, dir, .. } = HubSetup::start(agent, json!({})).await;
    // What the Node sidecar's lib/log.js writes (reference section 6.4).
    let node = concat!(
        r#"{"time":"2026-11-20T10:00:00.000Z","severity":"info","message":"startup","module":"sidecar/index","pid":4242,"node":"box","agent_id":"console-node-log","function":"main","line":12}"#,
        "\n",
        r#"{"time":"2026-11-20T10:00:01.000Z","severity":"notice","message":"identified","module":"sidecar/index","pid":4242,"node":"box","agent_id":"console-node-log"}"#,
        "\n"
    );
    std::fs::write(dir.join("sidecar.log"), node).unwrap();
    let node_files = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("sidecar.log.node-")
            })
            .collect()
    };
    for run in 1..=2 {
        let mut sidecar = Sidecar::spawn(dir.path(), &dir.join("config.json"));
        let log = sidecar.wait_log_count("identified", run, SECS(10)).await;
        assert_eq!(
            log.iter().filter(|e| e["event"] == "identified").count(),
            run,
            "run {run}: {log:?}"
        );
        sidecar.signal("TERM");
        assert_eq!(sidecar.wait_exit(SECS(2)).await.and_then(|s| s.code()), Some(0));
        // One file, one format: every line of sidecar.log is this sidecar's.
        let log = sidecar.log_events();
        assert!(
            log.iter()
                .all(|e| e.get("ts").is_some() && e.get("event").is_some()),
            "run {run}: {log:?}"
        );
        let moved: Vec<_> = log
            .iter()
            .filter(|e| e["event"] == "node_log_moved_aside")
            .collect();
        let files = node_files();
        assert_eq!(files.len(), 1, "run {run}: {files:?}");
        assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), node);
        // Said once: in the log file and on the console, at the first start only.
        assert_eq!(moved.len(), 1, "run {run}: {log:?}");
        assert_eq!(moved[0]["moved_to"], files[0].display().to_string());
        let stdout = sidecar.stdout();
        let said = stdout
            .matches("held the Node sidecar's log: moved aside to")
            .count();
        assert_eq!(said, usize::from(run == 1), "run {run}: {stdout}");
    }
}

/// `println!` and friends panic when stdout or stderr cannot be written: none may come back into
/// the sidecar's sources (use `outln!`, `out!` and `errln!`, which never panic).
#[test]
fn no_panicking_print_macro_in_the_sources() {
    fn visit(dir: &std::path::Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                visit(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (n, line) in text.lines().enumerate() {
                    let code = line.trim_start();
                    if code.starts_with("#[cfg(test)]") {
                        // Test modules come last in a file; a test may print what it skipped.
                        break;
                    }
                    if code.starts_with("//") {
                        continue;
                    }
                    for mac in ["println!", "print!", "eprintln!", "eprint!"] {
                        let hit = code.match_indices(mac).any(|(at, _)| {
                            // Not the tail of another name (`outln!`, `sprint!`...).
                            at == 0
                                || !code.as_bytes()[at - 1].is_ascii_alphanumeric()
                                    && code.as_bytes()[at - 1] != b'_'
                        });
                        if hit {
                            found.push(format!("{}:{}: {}", path.display(), n + 1, code));
                        }
                    }
                }
            }
        }
    }
    let mut found = Vec::new();
    visit(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut found,
    );
    assert!(
        found.is_empty(),
        "use outln!/out!/errln! instead:\n{}",
        found.join("\n")
    );
}
