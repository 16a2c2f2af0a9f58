//! The console is best effort: a closed or full stdout never stops the daemon (its log file has
//! every event), and other commands say their output was lost instead of panicking. And the first
//! start over the Node sidecar's log moves that log aside instead of mixing two formats.

mod support;

use agentcom_sidecar::hub::{EmbeddedHub, HubEvent, HubOptions};
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
        let hub = EmbeddedHub::start(HubOptions::default()).await.unwrap();
        let token = hub.add_token(&agent);
        let mut events = hub.events();
        let dir = TempDir::new(&agent);
        write_private(
            &dir.join("config.json"),
            &config_json(&agent, &token, &hub.url(), json!({})),
        );
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
        wait_hub(&mut events, SECS(2), "close 1000", |e| {
            matches!(
                e,
                HubEvent::Closed {
                    code: Some(1000),
                    by_hub: false,
                    ..
                }
            )
        })
        .await;
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
