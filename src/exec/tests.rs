//! The seam between the relay and its runners: the relay asks, the agent waker runs and answers.

use super::agent::AgentWaker;
use super::*;
use crate::event_log::EventLog;
use crate::protocol::TaskFrame;
use crate::relay::machine::WakeEnd;
use crate::relay::runtime::{task_file, RelayRuntime};
use serde_json::{json, Map, Value};
use std::path::Path;
use std::time::Duration;

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A fresh folder for one test, removed when it ends.
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("agentcom-exec-{name}-"))
        .tempdir()
        .unwrap()
}

/// A config whose queue.json and results_dir live in `dir`.
fn config(dir: &Path, wake_command: Option<&str>) -> Config {
    let text = format!(r#"{{"agent_id":"a1","token":"{TOKEN}","hub_url":"ws://127.0.0.1:4000/ws"}}"#);
    let mut config = Config::parse(&text, &dir.join("config.json")).unwrap();
    config.wake_command = wake_command.map(str::to_owned);
    config.results_dir = dir.join("results");
    config.queue_file = dir.join("queue.json");
    config
}

fn assign(task_id: &str) -> Map<String, Value> {
    let frame = json!({"type": "task_assign", "task_id": task_id, "description": "d", "generation": 1});
    frame.as_object().unwrap().clone()
}

async fn next(runner: &mut impl TaskRunner) -> RelayInput {
    tokio::time::timeout(Duration::from_secs(10), runner.next_input())
        .await
        .expect("the runner said nothing within 10 s")
}

#[tokio::test]
async fn the_relay_asks_for_a_run_and_starts_nothing_itself() {
    let tmp = temp_dir("asks");
    let dir = tmp.path().to_path_buf();
    let config = config(&dir, Some("exit 0"));
    let (mut log, _captured) = EventLog::capture("a1");
    let mut relay = RelayRuntime::start(&config, &mut log, |_| {}).unwrap();
    assert_eq!(relay.take_run_request(), None);
    relay.handle(RelayInput::LinkUp, &mut log);
    relay.handle(RelayInput::Frame(TaskFrame::Assign(assign("t1"))), &mut log);
    match relay.take_run_request() {
        Some(RunRequest::Start { task, attempt: 1 }) => assert_eq!(task.task_id, "t1"),
        other => panic!("expected a start of t1, got {other:?}"),
    }
    assert_eq!(relay.take_run_request(), None);
    // Nothing ran: the task file is the runner's to write.
    assert!(!task_file(&config.results_dir, "t1").exists());
}

#[cfg(unix)]
#[tokio::test]
async fn the_agent_waker_answers_a_start_with_the_wake_and_the_agents_end() {
    let tmp = temp_dir("wakes");
    let dir = tmp.path().to_path_buf();
    let config = config(&dir, Some("exit 0"));
    let mut runners = Runners::new(&config, Box::new(super::pipeline::NoPipeline));
    let task = TaskRecord::from_assign(&assign("t1"), 0).unwrap();
    assert!(matches!(runners.route(&task), Route::Wake { .. }));
    let now = runners.handle(RunRequest::Start {
        task: task.clone(),
        attempt: 1,
    });
    // The process group is announced at once, so that queue.json records it before anything else.
    assert!(
        matches!(now.as_slice(), [RelayInput::AgentGroup { task_id, .. }] if task_id == "t1"),
        "{now:?}"
    );
    let written = std::fs::read_to_string(task_file(&config.results_dir, "t1")).unwrap();
    assert_eq!(written, task.to_task_json());
    assert_eq!(
        next(&mut runners).await,
        RelayInput::WakeFinished {
            task_id: "t1".into(),
            attempt: 1,
            end: WakeEnd::Success
        }
    );
    assert_eq!(
        next(&mut runners).await,
        RelayInput::AgentGone {
            task_id: "t1".into(),
            outlived_wake: false
        }
    );
    // Stopping a task nobody runs any more is harmless, and says nothing.
    assert!(runners
        .handle(RunRequest::Stop { task_id: "t1".into() })
        .is_empty());
}

#[tokio::test]
async fn without_a_wake_command_a_start_ends_in_a_failed_wake() {
    let tmp = temp_dir("nowake");
    let dir = tmp.path().to_path_buf();
    let mut waker = AgentWaker::new(&config(&dir, None));
    let task = TaskRecord::from_assign(&assign("t1"), 0).unwrap();
    assert!(waker.handle(RunRequest::Start { task, attempt: 2 }).is_empty());
    assert_eq!(
        next(&mut waker).await,
        RelayInput::WakeFinished {
            task_id: "t1".into(),
            attempt: 2,
            end: WakeEnd::Failed("no wake_command configured".into())
        }
    );
}
