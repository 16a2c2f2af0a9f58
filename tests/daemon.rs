//! Running like a daemon: one instance per state folder, `status`, and `restart_sidecar`.

mod support;

use agentcom_sidecar::hub::{EmbeddedHub, HubEvent};
use serde_json::{json, Value};
use std::time::Duration;
use support::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// The hub and the folder with `config.json` of [`HubSetup`] for `agent`.
async fn hub_and_config(agent: &str) -> (EmbeddedHub, TempDir) {
    let HubSetup { hub, dir, .. } = HubSetup::start(agent, json!({})).await;
    (hub, dir)
}

fn status_json(dir: &TempDir) -> Value {
    let out = binary()
        .args(["status", "--json", "--config"])
        .arg(dir.join("config.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn a_second_instance_on_the_same_folder_refuses_and_names_the_pid() {
    let (hub, dir) = hub_and_config("daemon-twice").await;
    let mut events = hub.events();
    let first = Sidecar::spawn(dir.path(), &dir.join("config.json"));
    wait_hub(&mut events, SECS(10), "identified", identified("daemon-twice")).await;
    let out = binary()
        .args(["run", "--config"])
        .arg(dir.join("config.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(73));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("PID {}", first.pid())), "{stderr}");
    let identifies = hub
        .history()
        .iter()
        .filter(|e| matches!(e, HubEvent::Identified { .. }))
        .count();
    assert_eq!(identifies, 1, "the second instance must not identify");
}

#[tokio::test]
async fn status_says_whether_the_daemon_runs_and_what_it_is_doing() {
    let (hub, dir) = hub_and_config("daemon-status").await;
    let before = status_json(&dir);
    assert_eq!(
        (before["running"].as_bool(), before["connection"].as_str()),
        (Some(false), Some("stopped"))
    );
    let mut events = hub.events();
    let mut sidecar = Sidecar::spawn(dir.path(), &dir.join("config.json"));
    wait_hub(&mut events, SECS(10), "identified", identified("daemon-status")).await;
    // The state file follows within a moment.
    let deadline = tokio::time::Instant::now() + SECS(5);
    let running = loop {
        let s = status_json(&dir);
        if s["connection"] == "identified" || tokio::time::Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(running["running"], true);
    assert_eq!(running["connection"], "identified");
    assert_eq!(running["pid"].as_u64(), Some(u64::from(sidecar.pid())));
    assert_eq!(running["last_state"]["agent_id"], "daemon-status");
    assert_eq!(running["last_state"]["outbox_depth"], 0);
    assert!(running["uptime_secs"].is_u64());
    let text = binary()
        .args(["status", "--config"])
        .arg(dir.join("config.json"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("running (PID {})", sidecar.pid())),
        "{text}"
    );
    sidecar.signal("TERM");
    sidecar.wait_exit(SECS(2)).await.expect("stopped");
    let after = status_json(&dir);
    assert_eq!(
        (after["running"].as_bool(), after["connection"].as_str()),
        (Some(false), Some("stopped"))
    );
    assert_eq!(after["last_state"]["connection"], "stopped");
}

#[tokio::test]
async fn restart_sidecar_under_a_service_manager_exits_with_75() {
    let (hub, dir) = hub_and_config("daemon-restart").await;
    let mut events = hub.events();
    let mut sidecar =
        Sidecar::spawn_with_env(dir.path(), &dir.join("config.json"), &[("INVOCATION_ID", "test")]);
    wait_hub(&mut events, SECS(10), "identified", identified("daemon-restart")).await;
    hub.push(
        "daemon-restart",
        json!({"type":"restart_sidecar","reason":"upgrade"}),
    )
    .await
    .unwrap();
    let status = sidecar.wait_exit(SECS(3)).await.expect("exited");
    assert_eq!(status.code(), Some(75));
    wait_hub(&mut events, SECS(2), "close 1000", closed_by_sidecar).await;
}

#[tokio::test]
async fn restart_sidecar_without_a_service_manager_re_executes_itself() {
    let (hub, dir) = hub_and_config("daemon-reexec").await;
    let mut events = hub.events();
    let mut sidecar = Sidecar::spawn(dir.path(), &dir.join("config.json"));
    wait_hub(&mut events, SECS(10), "identified", identified("daemon-reexec")).await;
    hub.push(
        "daemon-reexec",
        json!({"type":"restart_sidecar","reason":"admin_commanded"}),
    )
    .await
    .unwrap();
    wait_hub(
        &mut events,
        SECS(10),
        "identified after the restart",
        identified("daemon-reexec"),
    )
    .await;
    assert!(
        sidecar.child.try_wait().unwrap().is_none(),
        "the same process (re-executed) runs on"
    );
    let startups = sidecar
        .wait_log_count("startup", 2, SECS(5))
        .await
        .iter()
        .filter(|e| e["event"] == "startup")
        .count();
    assert_eq!(startups, 2);
}

#[tokio::test]
async fn resource_report_carries_ollamas_vram_when_ollama_url_is_set() {
    use agentcom_sidecar::exec::fake_ollama::FakeOllama;
    let ollama = FakeOllama::start().await.unwrap();
    ollama.set_vram(&[3 << 30, 512 << 20]);
    let agent = "daemon-vram";
    let HubSetup {
        hub, mut events, dir, ..
    } = HubSetup::start(agent, json!({"ollama_url": ollama.url()})).await;
    let _sidecar = Sidecar::spawn(dir.path(), &dir.join("config.json"));
    wait_hub(&mut events, SECS(10), "identified", identified(agent)).await;
    // The first report is due 5 s after identified; it waits for Ollama's /api/ps.
    let HubEvent::Received { text, .. } = wait_hub(
        &mut events,
        SECS(12),
        "a resource_report",
        |e| matches!(e, HubEvent::Received { text, .. } if text.contains(r#""type":"resource_report""#)),
    )
    .await
    else {
        unreachable!()
    };
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        report["vram_used_bytes"].as_u64(),
        Some((3 << 30) + (512 << 20)),
        "{report}"
    );
    assert!(report["vram_total_bytes"].is_null(), "{report}");
    assert!(ollama.received().iter().any(|r| r.path == "/api/ps"));
    // The hub's schema accepted it: no error frame came back.
    let errors: Vec<String> = hub
        .history()
        .into_iter()
        .filter_map(|e| match e {
            HubEvent::Sent { text, .. } if text.contains(r#""type":"error""#) => Some(text),
            _ => None,
        })
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}
