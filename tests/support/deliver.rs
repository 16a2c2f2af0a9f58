//! Helpers for the delivery tests (tests/deliver.rs, tests/deliver_repo_dir.rs): a sidecar on
//! the embedded hub with a shell-script agent and a fake `gh`.

use super::{FakeGh, HubSetup, Sidecar};
use serde_json::{json, Value};

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

/// A `file_exists` verification step for `target`.
pub fn file_exists(target: &str) -> Value {
    json!({"type": "file_exists", "target": target})
}
