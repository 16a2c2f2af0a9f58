//! Fuzzing every input the sidecar parses, with proptest: hub frames, config.json, queue.json and
//! the agent's result and progress files. No input may panic, hang or make it buffer without bound.
//!
//! `FAULT_PROFILE=full` multiplies the number of cases by 20.

mod support;

use agentcom_sidecar::config::Config;
use agentcom_sidecar::protocol::{parse_inbound, FrameError, MAX_FRAME_BYTES};
use agentcom_sidecar::relay::store::TaskStore;
use agentcom_sidecar::relay::watch::{FileEvent, ResultContent, ResultWatcher, WatchOptions};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::*;

fn cases(ci: u32) -> ProptestConfig {
    let full = std::env::var("FAULT_PROFILE").is_ok_and(|p| p == "full");
    ProptestConfig {
        cases: if full { ci * 20 } else { ci },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, a few levels deep.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const FRAME_TYPES: &[&str] = &[
    "identified",
    "pong",
    "agent_left",
    "rate_limit_warning",
    "rate_limited",
    "error",
    "task_assign",
    "task_ack",
    "task_continue",
    "task_reassign",
    "task_cancelled",
    "state_report_ack",
    "restart_sidecar",
    "agent_joined",
    "status_changed",
    "ollama_report_ack",
    "agents",
    "ping",
    "",
];

const FRAME_FIELDS: &[&str] = &[
    "type",
    "agent_id",
    "task_id",
    "generation",
    "status",
    "reason",
    "error",
    "retry_after_ms",
    "tier",
    "action",
    "message",
    "description",
    "metadata",
    "assigned_at",
    "code",
    "capacity",
    "remaining",
];

/// Objects shaped like hub frames: a known type and known fields with arbitrary values.
fn arb_frame() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(FRAME_TYPES),
        prop::collection::vec((prop::sample::select(FRAME_FIELDS), arb_json()), 0..8),
    )
        .prop_map(|(kind, fields)| {
            let mut frame = json!({"type": kind});
            for (k, v) in fields {
                if k != "type" {
                    frame[k] = v;
                }
            }
            frame
        })
}

/// Frames the hub really sends (from the embedded hub and the recorded transcripts).
const VALID_FRAMES: &[&str] = &[
    r#"{"agent_id":"a","type":"identified"}"#,
    r#"{"timestamp":1,"type":"pong"}"#,
    r#"{"agent_id":"a","type":"agent_left"}"#,
    r#"{"retry_after_ms":1000,"tier":"normal","type":"rate_limited"}"#,
    r#"{"capacity":60,"remaining":4,"tier":"normal","type":"rate_limit_warning"}"#,
    r#"{"error":"task_complete_failed: stale_generation","type":"error"}"#,
    r#"{"assigned_at":1,"description":"d","generation":1,"metadata":{},"task_id":"task-0123456789abcdef","type":"task_assign"}"#,
    r#"{"status":"complete","task_id":"t","type":"task_ack"}"#,
    r#"{"generation":3,"task_id":"t","type":"task_continue"}"#,
    r#"{"task_id":"t","type":"task_reassign"}"#,
    r#"{"task_id":"t","timestamp":1,"type":"task_cancelled"}"#,
    r#"{"action":"continue","task_id":"t","type":"state_report_ack"}"#,
    r#"{"reason":"r","type":"restart_sidecar"}"#,
];

/// Parsing must be quick whatever the input (a hang would show as a slow case).
fn parse_quickly(text: &str) {
    let started = Instant::now();
    let _ = parse_inbound(text);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "parse_inbound took {:?} on {} bytes",
        started.elapsed(),
        text.len()
    );
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn hub_frames_any_text(text in ".{0,512}") {
        parse_quickly(&text);
    }

    #[test]
    fn hub_frames_any_json(value in arb_json()) {
        parse_quickly(&value.to_string());
    }

    #[test]
    fn hub_frames_shaped_like_frames(frame in arb_frame()) {
        parse_quickly(&frame.to_string());
    }

    #[test]
    fn hub_frames_mutated(
        which in 0..VALID_FRAMES.len(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 1..6),
    ) {
        let mut bytes = VALID_FRAMES[which].as_bytes().to_vec();
        for (at, op, byte) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match op {
                0 => bytes.truncate(i),
                1 => bytes[i] = byte,
                2 => bytes.insert(i, byte),
                _ => {
                    bytes.remove(i);
                }
            }
        }
        parse_quickly(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn hub_frames_at_the_limits() {
    // Nesting far past serde_json's recursion limit: an error, not a stack overflow.
    for text in [
        "[".repeat(200_000),
        "{\"a\":".repeat(100_000),
        format!("{}1{}", "[".repeat(5_000), "]".repeat(5_000)),
    ] {
        assert!(parse_inbound(&text).is_err());
    }
    // One byte over the limit is refused before it is parsed.
    let big = format!("{{\"type\":\"pong\",\"x\":\"{}\"}}", "a".repeat(MAX_FRAME_BYTES));
    assert!(matches!(parse_inbound(&big), Err(FrameError::TooLarge(n)) if n == big.len()));
}

const CONFIG_KEYS: &[&str] = &[
    "agent_id",
    "token",
    "token_file",
    "hub_url",
    "ca_file",
    "name",
    "capabilities",
    "wake_command",
    "cancel_command",
    "confirmation_timeout_ms",
    "wake_timeout_ms",
    "wake_retry_delays_ms",
    "max_pending",
    "progress_keepalive_ms",
    "readopt_window_ms",
    "results_dir",
    "queue_file",
    "log_file",
    "log_max_bytes",
    "log_keep",
    "report_resources",
    "heartbeat_interval_ms",
    "heartbeat_timeout_ms",
    "reconnect_initial_ms",
    "reconnect_max_ms",
    "reconnect_jitter",
    "hub_api_url",
    "repo_dir",
    "log_level",
    "agnet_id",
];

fn config_path() -> std::path::PathBuf {
    std::env::temp_dir()
        .join(format!("agentcom-fuzz-config-{}", std::process::id()))
        .join("config.json")
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn config_any_text(text in ".{0,400}") {
        let _ = Config::parse(&text, &config_path());
    }

    #[test]
    fn config_any_values_for_its_keys(
        fields in prop::collection::vec((prop::sample::select(CONFIG_KEYS), arb_json()), 0..12),
        base in any::<bool>(),
    ) {
        // On top of a valid config (so the value checks are reached), or alone.
        let mut config = if base {
            json!({"agent_id": "a", "token": "t".repeat(64), "hub_url": "ws://127.0.0.1:4000/ws"})
        } else {
            json!({})
        };
        for (k, v) in fields {
            // A token_file is read: keep it inside the (missing) folder of the config.
            let v = if k == "token_file" || k == "ca_file" { json!(v.to_string().replace('/', "_")) } else { v };
            config[k] = v;
        }
        let _ = Config::parse(&config.to_string(), &config_path());
    }
}

#[cfg(unix)]
#[test]
fn config_and_token_files_are_read_with_a_bound() {
    let dir = TempDir::new("fuzz-bounds");
    let opts = agentcom_sidecar::config::LoadOptions {
        env_token: None,
        allow_insecure_permissions: true,
    };
    // An endless token file (a device): refused unopened, not read until memory runs out.
    let text = json!({"agent_id": "a", "token_file": "/dev/zero", "hub_url": "ws://127.0.0.1:4000/ws"});
    let started = Instant::now();
    let err = Config::parse_with(&text.to_string(), &dir.join("config.json"), &opts)
        .expect_err("/dev/zero is no token file")
        .to_string();
    assert!(err.contains("is a character device, not a regular file"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // An oversized token file: refused after 64 KiB.
    write_private(&dir.join("big.token"), &"t".repeat(100 << 10));
    let text = json!({"agent_id": "a", "token_file": "big.token", "hub_url": "ws://127.0.0.1:4000/ws"});
    let err = Config::parse_with(&text.to_string(), &dir.join("config.json"), &opts)
        .expect_err("too big")
        .to_string();
    assert!(err.contains("more than 65536 bytes"), "{err}");
    // An endless or oversized config file, the same.
    let err = Config::load_with(std::path::Path::new("/dev/zero"), &opts)
        .expect_err("/dev/zero is no config")
        .to_string();
    assert!(
        err.contains("it is a character device, not a regular file"),
        "{err}"
    );
    let big = dir.join("big.json");
    write_private(&big, &format!("{{\"name\": \"{}\"}}", "a".repeat(2 << 20)));
    let err = Config::load_with(&big, &opts).expect_err("too big").to_string();
    assert!(err.contains("more than 1048576 bytes"), "{err}");
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn queue_json_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        queue_json_loads(&bytes);
    }

    #[test]
    fn queue_json_any_json(value in arb_json()) {
        queue_json_loads(value.to_string().as_bytes());
    }

    #[test]
    fn queue_json_shaped_like_a_queue(
        tasks in prop::collection::vec(
            prop::collection::vec((prop::sample::select(&[
                "task_id", "description", "metadata", "status", "generation", "assigned_at", "outcome",
                "attempt", "result", "reason",
            ][..]), arb_json()), 0..6),
            0..3,
        ),
    ) {
        let tasks: Vec<Value> = tasks
            .into_iter()
            .map(|fields| {
                let mut t = json!({"task_id": "t1"});
                for (k, v) in fields {
                    t[k] = v;
                }
                t
            })
            .collect();
        let queue = json!({"active": tasks.first(), "recovering": tasks.get(1), "pending": tasks.get(2..).unwrap_or(&[])});
        queue_json_loads(queue.to_string().as_bytes());
    }
}

/// Loading never fails (a bad file is moved aside, keeping its bytes) and never panics.
fn queue_json_loads(bytes: &[u8]) {
    let dir = TempDir::new("fuzz-queue");
    let path = dir.join("queue.json");
    std::fs::write(&path, bytes).unwrap();
    let loaded = TaskStore::new(&path).load().expect("load never fails on content");
    match loaded.moved_aside {
        Some(moved) => {
            assert!(loaded.tasks.is_empty());
            assert_eq!(std::fs::read(&moved.moved_to).unwrap(), bytes);
        }
        None => {
            // A good file round-trips through save.
            TaskStore::new(&path).save(&loaded.tasks).unwrap();
            let again = TaskStore::new(&path).load().unwrap();
            assert_eq!(again.tasks, loaded.tasks);
        }
    }
}

/// Result and progress files with arbitrary content, through the real watcher: a JSON object is
/// reported as such, everything else as not an object or invalid (or not at all, while it is a
/// prefix of JSON), each at most once, and the watcher keeps running.
#[tokio::test]
async fn result_and_progress_files_with_any_content() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::new(cases(64));
    let contents = prop::collection::vec(
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            arb_json().prop_map(|v| v.to_string().into_bytes()),
            arb_frame().prop_map(|v| v.to_string().into_bytes()),
            arb_json().prop_map(|v| json!({"progress": v, "message": v}).to_string().into_bytes()),
        ],
        runner.config().cases as usize,
    );
    let contents = contents.new_tree(&mut runner).unwrap().current();
    let dir = TempDir::new("fuzz-results");
    let opts = WatchOptions {
        settle: Duration::from_millis(100),
        rescan_every: Duration::from_millis(50),
        ..WatchOptions::new(dir.path())
    };
    let (mut watcher, mut events) = ResultWatcher::start(opts).unwrap();
    for (i, bytes) in contents.iter().enumerate() {
        std::fs::write(dir.join(format!("r{i}.json")), bytes).unwrap();
        std::fs::write(dir.join(format!("r{i}.progress")), bytes).unwrap();
        watcher.track(&format!("r{i}"));
    }
    std::fs::write(dir.join("sentinel.json"), br#"{"status":"success"}"#).unwrap();
    watcher.track("sentinel");
    let mut results = std::collections::HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut sentinel = false;
    // Everything settles within `settle`; wait for the sentinel, then a little past the settle.
    let mut quiet_until = None;
    loop {
        let until = quiet_until.unwrap_or(deadline);
        match tokio::time::timeout_at(until, events.recv()).await {
            Ok(Some(FileEvent::Result { task_id, content })) => {
                if task_id == "sentinel" {
                    sentinel = true;
                    quiet_until = Some(tokio::time::Instant::now() + Duration::from_millis(500));
                } else {
                    assert!(
                        results.insert(task_id.clone(), content).is_none(),
                        "{task_id} reported twice"
                    );
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("the watcher stopped"),
            Err(_) => break,
        }
    }
    assert!(sentinel, "the watcher never reported the sentinel");
    for (i, bytes) in contents.iter().enumerate() {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let parsed: Option<Value> = serde_json::from_slice(bytes).ok();
        match (results.get(&format!("r{i}")), parsed) {
            (Some(ResultContent::Object(map)), Some(Value::Object(expected))) => assert_eq!(map, &expected),
            (Some(ResultContent::Object(map)), other) => panic!("r{i}: {map:?} reported for {other:?}"),
            (_, Some(Value::Object(_))) => panic!(
                "r{i}: an object not reported as one: {:?}",
                String::from_utf8_lossy(bytes)
            ),
            _ => {}
        }
    }
}

#[test]
fn floats_in_task_metadata_survive_a_persist_and_reload_exactly() {
    // Found by queue_json_shaped_like_a_queue: without serde_json's float_roundtrip, this came
    // back from queue.json as 2.9961880304837527e-167.
    let queue = r#"{"active": {"task_id": "t1", "metadata": {"x": 2.996188030483753e-167, "y": 0.1}}}"#;
    queue_json_loads(queue.as_bytes());
    let dir = TempDir::new("fuzz-float");
    let path = dir.join("queue.json");
    std::fs::write(&path, queue).unwrap();
    let loaded = TaskStore::new(&path).load().unwrap();
    assert_eq!(
        loaded.tasks[0].metadata["x"].as_f64(),
        Some(2.996188030483753e-167)
    );
}
