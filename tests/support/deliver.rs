//! Helpers for the delivery tests (tests/deliver.rs, tests/deliver_repo_dir.rs): a sidecar on
//! the embedded hub with a shell-script agent and a fake `gh`.

use super::{FakeGh, GitOrigin, HubSetup, Sidecar};
use agentcom_sidecar::hub::TaskSpec;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

/// An agent that works where the sidecar says (`AGENTCOM_WORKSPACE`): it writes NOTES.md there
/// and reports success.
pub const AGENT_SH: &str = r#"#!/bin/sh
ws="${AGENTCOM_WORKSPACE:-.}"
printf '%s' "$ws" > "$AGENTCOM_RESULTS_DIR/../workspace-$AGENTCOM_TASK_ID"
: > "$AGENTCOM_STARTED_FILE"
printf 'hello from the agent\n' > "$ws/NOTES.md"
printf '{"status":"success","output":"wrote NOTES.md"}' > "$AGENTCOM_RESULT_FILE.tmp"
mv "$AGENTCOM_RESULT_FILE.tmp" "$AGENTCOM_RESULT_FILE"
"#;

/// A sidecar on the embedded hub whose agent is [`AGENT_SH`], `gh_command` the fake `gh`, and
/// `extra` merged into its config.
pub async fn setup(agent: &str, gh: &FakeGh, extra: Value) -> (HubSetup, Sidecar) {
    setup_script(agent, AGENT_SH, gh, extra).await
}

/// Like [`setup`], with `script` as the agent.
pub async fn setup_script(agent: &str, script: &str, gh: &FakeGh, extra: Value) -> (HubSetup, Sidecar) {
    let mut config = json!({"gh_command": gh.command()});
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            config[k] = v;
        }
    }
    let mut setup = HubSetup::start(agent, json!({}))
        .await
        .with_agent(script, "sh AGENT", config);
    setup.hub.set_rate_limits(false);
    let sidecar = setup.spawn();
    setup.identified().await;
    (setup, sidecar)
}

/// A task on `origin`'s repository (`repo`) described `description`, with these checks.
pub fn repo_task(origin: &GitOrigin, description: &str, verification_steps: Vec<Value>) -> TaskSpec {
    TaskSpec {
        description: description.into(),
        repo: Some(origin.url()),
        verification_steps,
        ..TaskSpec::default()
    }
}

/// A `file_exists` verification step for `target`.
pub fn file_exists(target: &str) -> Value {
    json!({"type": "file_exists", "target": target})
}

/// A sidecar whose `repo_dir` is a clone of a fresh bare `origin`, with `script` as the agent
/// and a fake `gh`; `name` is the agent id and names the folders.
pub struct RepoDirSidecar {
    /// The bare repository the clone pushes to.
    pub origin: GitOrigin,
    /// The clone, the sidecar's `repo_dir`.
    pub clone: PathBuf,
    /// The fake `gh` (`gh_command`).
    pub gh: FakeGh,
    /// The embedded hub and the sidecar's folder.
    pub s: HubSetup,
    /// The running sidecar: dropping it stops the sidecar, so bind it (`sidecar: _sidecar`)
    /// rather than leave it to `..`.
    pub sidecar: Sidecar,
}

impl RepoDirSidecar {
    /// Starts it and waits until the sidecar has identified.
    pub async fn start(name: &str, script: &str) -> RepoDirSidecar {
        let origin = GitOrigin::new(&format!("{name}-origin"));
        let clone = origin.clone_as("work");
        let gh = FakeGh::new(&format!("{name}-gh"));
        let (s, sidecar) = setup_script(name, script, &gh, json!({"repo_dir": clone})).await;
        RepoDirSidecar {
            origin,
            clone,
            gh,
            s,
            sidecar,
        }
    }
}

/// Waits (30 s at most) until the hub records `task_id` completed, and returns its record as
/// `GET /api/tasks/:id` shows it.
pub async fn completed(s: &HubSetup, task_id: &str) -> Value {
    s.wait_status(task_id, "completed", Duration::from_secs(30)).await;
    s.hub.task_json(task_id).expect("the hub knows the task")
}
