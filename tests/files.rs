//! The files the sidecar reads, writes and creates, on the real binary: FIFOs and other
//! non-regular files never hang it, what it creates is private to its user, `status` needs no
//! token, and startup refuses a `results_dir` that is a file and a token too short to redact.
#![cfg(unix)]

mod support;

use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// The agent: writes `.started`, waits for `release` beside the results folder, then writes
/// its result to a temp file and renames it into place.
const AGENT_SH: &str = r#"#!/bin/sh
dir="$AGENTCOM_RESULTS_DIR"
: > "$AGENTCOM_STARTED_FILE"
while [ ! -e "$dir/../release" ] && [ -d "$(dirname "$dir")" ]; do sleep 0.05; done
printf '{"status":"success","output":"done"}' > "$AGENTCOM_RESULT_FILE.tmp" && mv "$AGENTCOM_RESULT_FILE.tmp" "$AGENTCOM_RESULT_FILE"
"#;

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(
        rc,
        0,
        "mkfifo {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Runs the binary with `args`, killing it if it has not exited within `within`: returns
/// (exit code, stderr, how long it took). A hang is a test failure, never a hung test.
fn run_bounded(args: &[&str], config: &Path, within: Duration) -> (Option<i32>, String, Duration) {
    let stderr_path = config.with_file_name(format!("stderr-{}.txt", args[0]));
    let started = Instant::now();
    let mut child = binary()
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    match status {
        Some(status) => (status.code(), stderr, started.elapsed()),
        None => panic!(
            "`{} --config {}` still ran after {within:?} (killed); stderr:\n{stderr}",
            args.join(" "),
            config.display()
        ),
    }
}

/// A hub, a folder with the agent script, and a config whose wake command runs it in the
/// background (see [`HubSetup`]).
async fn world(agent: &str, extra: Value) -> HubSetup {
    HubSetup::start(agent, json!({}))
        .await
        .with_agent(AGENT_SH, "sh AGENT &", extra)
}

/// Submits the task every test here uses.
fn submit(w: &HubSetup) -> String {
    w.submit("check the files")
}

/// Lets the agent of `results` (its results folder) write its result.
fn release(results: &Path) {
    std::fs::write(results.parent().unwrap().join("release"), "").unwrap();
}

#[tokio::test]
async fn fifos_in_results_dir_are_skipped_and_the_held_task_still_completes() {
    let mut w = world("files-fifo", json!({})).await;
    let mut sidecar = w.spawn();
    w.identified().await;
    let results = w.dir.join("results");
    let id = submit(&w);
    wait_file(&results.join(format!("{id}.started")), SECS(10)).await;
    // While the agent works: a FIFO under its result's and its progress's names, and under
    // an unknown task's names. Opening any of them would block until a writer came.
    let fifos = [
        results.join(format!("{id}.json")),
        results.join(format!("{id}.progress")),
        results.join("unknown-task.json"),
        results.join("unknown-task.progress"),
    ];
    for fifo in &fifos {
        mkfifo(fifo);
    }
    // One line for each FIFO under a name the sidecar reads (an unknown task's progress is not).
    let log = sidecar.wait_log_count("file_not_regular", 3, SECS(10)).await;
    let skipped: Vec<&Value> = log.iter().filter(|e| e["event"] == "file_not_regular").collect();
    assert_eq!(skipped.len(), 3, "{skipped:#?}\nstdout:\n{}", sidecar.stdout());
    for fifo in &fifos[..3] {
        let line = skipped
            .iter()
            .find(|e| e["file"] == fifo.display().to_string())
            .unwrap_or_else(|| panic!("no line for {}: {skipped:#?}", fifo.display()));
        assert_eq!(line["kind"], "a FIFO (named pipe)");
    }
    assert!(
        sidecar
            .stdout()
            .contains("it is a FIFO (named pipe), not a regular file"),
        "{}",
        sidecar.stdout()
    );
    // The agent renames its real result over the FIFO: it is reported and the hub completes it.
    release(&results);
    w.wait_status(&id, "completed", SECS(10)).await;
    // Still one line each: a FIFO that stays is not reported again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = sidecar
        .log_events()
        .iter()
        .filter(|e| e["event"] == "file_not_regular")
        .count();
    assert_eq!(again, 3);
    // Nothing waits on a FIFO: SIGTERM ends it promptly, cleanly.
    let asked = Instant::now();
    sidecar.signal("TERM");
    let status = sidecar
        .wait_exit(SECS(5))
        .await
        .expect("no exit within 5 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "stderr:\n{}", sidecar.stderr());
    assert!(asked.elapsed() < SECS(3), "took {:?}", asked.elapsed());
}

/// A config at `dir/config.json` naming a hub nobody needs (every case fails before connecting).
fn startup_config(dir: &TempDir, extra: Value) -> PathBuf {
    let path = dir.join("config.json");
    write_private(
        &path,
        &config_json(
            "files-startup",
            "files-startup-token-0123456789",
            "ws://127.0.0.1:9/ws",
            extra,
        ),
    );
    path
}

#[test]
fn fifos_as_startup_files_exit_78_at_once_naming_the_field() {
    // (field named in the message, the FIFO's name, the config keys that point at it)
    let cases: [(&str, &str, Value); 7] = [
        ("token_file", "tok", json!({"token": null, "token_file": "tok"})),
        ("log_file", "sidecar.log", json!({})),
        ("queue_file", "queue.json", json!({})),
        ("ca_file", "ca.pem", json!({"ca_file": "ca.pem"})),
        ("queue_file", "agentcom-sidecar.state.json", json!({})),
        ("queue_file", "agentcom-sidecar.lock", json!({})),
        ("config", "config.json", json!({})),
    ];
    for command in ["run", "check"] {
        for (field, name, extra) in &cases {
            let dir = TempDir::new("files-startup-fifo");
            let config = if *name == "config.json" {
                let path = dir.join("config.json");
                mkfifo(&path);
                path
            } else {
                let config = startup_config(&dir, extra.clone());
                mkfifo(&dir.join(name));
                config
            };
            let (code, stderr, took) = run_bounded(&[command], &config, SECS(10));
            let what = format!("{command} with {name} a FIFO");
            assert_eq!(code, Some(78), "{what}: stderr:\n{stderr}");
            assert!(took < SECS(5), "{what}: took {took:?}");
            assert!(
                stderr.contains("is a FIFO (named pipe), not a regular file"),
                "{what}:\n{stderr}"
            );
            assert!(
                stderr.contains(&dir.join(name).display().to_string()),
                "{what}:\n{stderr}"
            );
            if *field != "config" {
                assert!(stderr.contains(&format!("field `{field}`")), "{what}:\n{stderr}");
            } else {
                assert!(stderr.contains("cannot read config file"), "{what}:\n{stderr}");
            }
            assert!(!stderr.contains("ok: config"), "{what}:\n{stderr}");
        }
    }
}

#[test]
fn a_results_dir_that_is_a_file_exits_78_naming_the_field() {
    let dir = TempDir::new("files-results-file");
    let config = startup_config(&dir, json!({"results_dir": "results"}));
    std::fs::write(dir.join("results"), "not a folder").unwrap();
    for command in ["run", "check"] {
        let (code, stderr, _) = run_bounded(&[command], &config, SECS(10));
        assert_eq!(code, Some(78), "{command}: {stderr}");
        assert!(stderr.contains("field `results_dir`"), "{command}: {stderr}");
        assert!(
            stderr.contains("which is a regular file, not a folder"),
            "{command}: {stderr}"
        );
        assert!(!stderr.contains("File exists"), "{command}: {stderr}");
    }
}

#[test]
fn tokens_under_16_characters_are_refused_at_startup_saying_why() {
    let dir = TempDir::new("files-short-token");
    let config = startup_config(&dir, json!({"token": "abc"}));
    let (code, stderr, _) = run_bounded(&["run"], &config, SECS(10));
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("field `token` is 3 characters long"), "{stderr}");
    assert!(stderr.contains("at least 16"), "{stderr}");
    assert!(stderr.contains("panic messages"), "{stderr}");
    // The same from the environment, without echoing it.
    let config = startup_config(&dir, json!({}));
    let out = binary()
        .args(["run", "--config"])
        .arg(&config)
        .env("AGENTCOM_TOKEN", "qz7")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("AGENTCOM_TOKEN environment variable"), "{stderr}");
    assert!(stderr.contains("3 characters long"), "{stderr}");
    assert!(!stderr.contains("qz7"), "{stderr}");
}

#[tokio::test]
async fn status_needs_no_token_when_the_daemon_has_it_from_its_environment() {
    let mut w = world("files-status", json!({})).await;
    // The token only in the daemon's environment, as a service unit would give it.
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&w.config).unwrap()).unwrap();
    let token = config.as_object_mut().unwrap().remove("token").unwrap();
    let token = token.as_str().unwrap().to_owned();
    write_private(&w.config, &config.to_string());
    let _sidecar = Sidecar::spawn_with_env(w.dir.path(), &w.config, &[("AGENTCOM_TOKEN", &token)]);
    w.identified().await;
    // `status` in a shell without AGENTCOM_TOKEN: the daemon's state, exit 0.
    let deadline = Instant::now() + SECS(10);
    loop {
        let out = binary()
            .args(["status", "--json", "--config"])
            .arg(&w.config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(!stderr.contains("token"), "{stderr}");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["running"], true, "{report}");
        if report["connection"] == "identified" {
            break;
        }
        assert!(Instant::now() < deadline, "never identified: {report}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The text form too.
    let out = binary()
        .args(["status", "--config"])
        .arg(&w.config)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn what_the_sidecar_creates_is_private_to_its_user() {
    // A permissive umask, as a login shell has: the sidecar must not depend on it.
    // SAFETY: umask only changes this process's file creation mask (inherited by the child).
    unsafe { libc::umask(0o022) };
    let mut w = world(
        "files-modes",
        json!({
            "queue_file": "state/queue.json",
            "log_file": "logs/sidecar.log",
            "results_dir": "work/results",
        }),
    )
    .await;
    let mut sidecar = w.spawn();
    w.identified().await;
    let id = submit(&w);
    let results = w.dir.join("work/results");
    wait_file(&results.join(format!("{id}.started")), SECS(10)).await;
    // While the task is held: the queue, the task file for the agent, the wake log, the state
    // file, the lock file and the log, and every folder the sidecar made for them.
    let state = w.dir.join("state");
    wait_file(&state.join("agentcom-sidecar.state.json"), SECS(10)).await;
    let files = [
        state.join("queue.json"),
        state.join("agentcom-sidecar.state.json"),
        state.join("agentcom-sidecar.lock"),
        w.dir.join("logs/sidecar.log"),
        results.join(format!("tasks/{id}.json")),
        results.join(format!("logs/{id}.wake.log")),
    ];
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    let folders = [
        state.clone(),
        w.dir.join("logs"),
        w.dir.join("work"),
        results.clone(),
        results.join("tasks"),
        results.join("logs"),
    ];
    for folder in &folders {
        assert_eq!(mode(folder), 0o700, "{}", folder.display());
    }
    // queue.json is rewritten on every change: still private after the task completed.
    release(&results);
    w.wait_status(&id, "completed", SECS(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mode(&state.join("queue.json")), 0o600);
    sidecar.signal("TERM");
    assert_eq!(sidecar.wait_exit(SECS(5)).await.and_then(|s| s.code()), Some(0));
}
