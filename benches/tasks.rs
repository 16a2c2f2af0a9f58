//! Figures for the task path: `task_assign` received -> `task_accepted` sent (with the fsync'd
//! queue.json write), and result file renamed into place -> `task_complete` sent. A benchmark, not
//! a test: it prints numbers and asserts nothing.
//!
//! Run: `cargo bench --bench tasks` (BENCH_TASKS=100 by default). Times are taken by the embedded
//! hub as frames cross its socket, so they include the loopback hop both ways.

use agentcom_sidecar::hub::{EmbeddedHub, HubEvent, HubOptions, TaskSpec};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::sync::broadcast::Receiver;
use tokio::time::Instant;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[(((sorted.len() as f64) - 1.0) * p).round() as usize]
}

async fn next_matching(events: &mut Receiver<HubEvent>, what: &str, id: &str) -> Instant {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Ok(HubEvent::Received { text, at, .. }))
                if what.starts_with('>') && text.contains(&what[1..]) && text.contains(id) =>
            {
                return at
            }
            Ok(Ok(HubEvent::Sent { text, at, .. }))
                if what.starts_with('<') && text.contains(&what[1..]) && text.contains(id) =>
            {
                return at
            }
            Ok(_) => {}
            Err(_) => panic!("no {what} for {id} within 10 s"),
        }
    }
}

fn main() {
    let n: usize = std::env::var("BENCH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let hub = EmbeddedHub::start(HubOptions::default()).await.unwrap();
        let token = hub.add_token("bench-tasks");
        let dir = std::env::temp_dir().join(format!("agentcom-sidecar-bench-tasks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = serde_json::json!({
            "agent_id": "bench-tasks", "token": token, "hub_url": hub.url(),
            "wake_command": ": > \"$AGENTCOM_STARTED_FILE\"",
        });
        write_private(&dir.join("config.json"), &config.to_string());
        let mut events = hub.events();
        let mut child = Command::new(env!("CARGO_BIN_EXE_agentcom-sidecar"))
            .env_remove("AGENTCOM_TOKEN")
            .args(["run", "--config"])
            .arg(dir.join("config.json"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        loop {
            if let Ok(HubEvent::Identified { .. }) = events.recv().await {
                break;
            }
        }
        let results = dir.join("results");
        let (mut accept, mut complete) = (vec![], vec![]);
        for _ in 0..n {
            let id = hub.submit_task(TaskSpec { description: "bench".into(), ..TaskSpec::default() });
            let assigned = next_matching(&mut events, "<task_assign", &id).await;
            let accepted = next_matching(&mut events, ">task_accepted", &id).await;
            accept.push((accepted - assigned).as_secs_f64() * 1000.0);
            let started = results.join(format!("{id}.started"));
            while !started.exists() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let tmp = results.join(format!("{id}.json.tmp"));
            std::fs::write(&tmp, r#"{"status":"success","output":"ok"}"#).unwrap();
            let renamed = Instant::now();
            std::fs::rename(&tmp, results.join(format!("{id}.json"))).unwrap();
            let completed = next_matching(&mut events, ">task_complete", &id).await;
            complete.push((completed - renamed).as_secs_f64() * 1000.0);
            next_matching(&mut events, "<task_ack", &id).await;
        }
        accept.sort_by(f64::total_cmp);
        complete.sort_by(f64::total_cmp);
        println!("agentcom-sidecar task path benchmark ({n} tasks, embedded hub on loopback)");
        println!(
            "  task_assign -> task_accepted (fsync'd)   median {:6.2} ms   p99 {:6.2} ms   (target p50 < 5 ms)",
            percentile(&accept, 0.5),
            percentile(&accept, 0.99)
        );
        println!(
            "  result renamed -> task_complete          median {:6.2} ms   p99 {:6.2} ms   (target p50 < 10 ms)",
            percentile(&complete, 0.5),
            percentile(&complete, 0.99)
        );
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// Writes the config readable by its owner only: the sidecar refuses one others can read.
fn write_private(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}
