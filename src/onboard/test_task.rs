//! `join`'s last step: one small task through the hub, assigned to this agent, followed to its end.
//! A sidecar must be running to take it: the service, one already running, or, without
//! `--service`, one `join` starts for this task and stops afterwards.

use super::{hub_failed, Progress, Steps};
use crate::config::Config;
use crate::hub_api::HubApi;
use crate::lock::InstanceLock;
use crate::submit::{follow, End};
use serde_json::json;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::time::Instant;

/// The test task's body: trivial tier with no shell command (so the sidecar wakes the agent),
/// assigned to `agent_id` only, no retries (a failure shows at once), no verification.
pub fn test_task_body(agent_id: &str) -> serde_json::Value {
    json!({
        "description": format!("Onboarding test: agent {agent_id} says hello (write a success result)"),
        "priority": "urgent",
        "complexity_tier": "trivial",
        "assign_to": agent_id,
        "max_retries": 0,
        "skip_verification": true,
        "max_verification_retries": 0,
        "metadata": {"onboarding_test": true}
    })
}

/// A sidecar `join` started for the test task; stopped (SIGTERM, then killed) when dropped or
/// by [`OwnDaemon::stop`].
struct OwnDaemon(tokio::process::Child);

impl OwnDaemon {
    fn start(config_path: &Path) -> Result<OwnDaemon, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
        let mut cmd = crate::exec::process::child_command(exe);
        cmd.arg("run")
            .arg("--config")
            .arg(config_path)
            .arg("--log-format")
            .arg("off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        cmd.spawn()
            .map(OwnDaemon)
            .map_err(|e| format!("cannot start `agentcom-sidecar run`: {e}"))
    }

    /// Stops it as a service manager would: SIGTERM (it closes with 1000), killed after 5 s.
    async fn stop(mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.0.id().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            if tokio::time::timeout(Duration::from_secs(5), self.0.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        let _ = self.0.kill().await;
    }
}

/// Waits until a sidecar holds the state folder's lock (`within`), or `own` exits first.
async fn wait_running(state_dir: &Path, own: Option<&mut OwnDaemon>, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let mut own = own;
    loop {
        if InstanceLock::holder(state_dir).is_some() {
            return Ok(());
        }
        if let Some(d) = own.as_deref_mut() {
            if let Ok(Some(status)) = d.0.try_wait() {
                return Err(format!("the sidecar stopped at once ({status})"));
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no sidecar took the state folder {} within {} s",
                state_dir.display(),
                within.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The test step: returns Err(exit code) after printing the failure and the next step.
pub(super) async fn run(
    test_timeout: Duration,
    api: &HubApi,
    config: &Config,
    config_path: &Path,
    progress: &mut Progress,
    steps: &Steps,
) -> Result<(), u8> {
    let state_dir = config.state_dir();
    let shown = config_path.display();
    let mut own = None;
    let holder = InstanceLock::holder(&state_dir);
    match holder {
        // With --service, the sidecar holding the state folder is the service's (it may have
        // started before this step looked, or be about to).
        _ if progress.service => {
            if holder.is_none() {
                if let Err(e) = wait_running(&state_dir, None, Duration::from_secs(20)).await {
                    steps.fail("test", &format!("the service did not start: {e}"), "see `agentcom-sidecar status` and the service manager's log (journalctl --user -u agentcom-sidecar)");
                    return Err(crate::exit_code::UNAVAILABLE);
                }
            }
            steps.note("test", "the service's sidecar takes it");
        }
        Some(pid) => steps.note(
            "test",
            &format!(
                "the sidecar running for this config{} takes it",
                pid.map(|p| format!(" (PID {p})")).unwrap_or_default()
            ),
        ),
        None => {
            let mut daemon = OwnDaemon::start(config_path).map_err(|e| {
                steps.fail(
                    "test",
                    &e,
                    "run `agentcom-sidecar run --config ...` yourself, then join again",
                );
                crate::exit_code::FATAL
            })?;
            if let Err(e) = wait_running(&state_dir, Some(&mut daemon), Duration::from_secs(15)).await {
                steps.fail(
                    "test",
                    &e,
                    &format!("run `agentcom-sidecar run --config {shown}` to see why"),
                );
                return Err(crate::exit_code::FATAL);
            }
            steps.note(
                "test",
                "no sidecar runs for this config: started one for this task (it stops afterwards)",
            );
            own = Some(daemon);
        }
    }
    let result = submit_and_follow(test_timeout, api, config, progress, steps).await;
    if let Some(daemon) = own {
        daemon.stop().await;
    }
    result
}

async fn submit_and_follow(
    test_timeout: Duration,
    api: &HubApi,
    config: &Config,
    progress: &mut Progress,
    steps: &Steps,
) -> Result<(), u8> {
    // A task submitted by an interrupted join is followed rather than sent again, while it lives.
    let earlier = match &progress.test_task_id {
        Some(id) => match api.task(id).await {
            Ok(t) if matches!(t["status"].as_str(), Some("queued" | "assigned" | "completed")) => {
                Some(id.clone())
            }
            _ => None,
        },
        None => None,
    };
    let task_id = match earlier {
        Some(id) => id,
        None => {
            let submitted = api
                .submit(&test_task_body(&config.agent_id))
                .await
                .map_err(|e| hub_failed(steps, "test", &e, "see the hub's answer"))?;
            progress.test_task_id = Some(submitted.task_id.clone());
            let _ = progress.save(&config.state_dir());
            submitted.task_id
        }
    };
    steps.note(
        "test",
        &format!("task {task_id} submitted (assign_to {})", config.agent_id),
    );
    let say = |line: String| steps.note("test", &line);
    let within = test_timeout;
    let end = follow(api, &task_id, within, Duration::from_secs(1), &say)
        .await
        .map_err(|e| hub_failed(steps, "test", &e, "see the hub's answer"))?;
    let logs = config
        .results_dir
        .join("logs")
        .join(format!("{task_id}.wake.log"));
    let why = |task: &serde_json::Value| {
        task["last_error"]
            .as_str()
            .map_or_else(|| "no reason given".to_owned(), crate::tasks::clean)
    };
    let next = format!(
        "look at {} and the sidecar's log; `agentcom-sidecar try --config {}` runs one task through your agent with each step explained",
        logs.display(),
        config.path.display()
    );
    match &end {
        End::Completed(_) => {
            steps.ok(
                "test",
                &format!("task {task_id} completed: the hub, this sidecar and your agent work together"),
            );
            Ok(())
        }
        End::Failed(task) | End::DeadLetter(task) => {
            steps.fail("test", &format!("task {task_id} failed: {}", why(task)), &next);
            Err(end.exit_code())
        }
        End::TimedOut(status) => {
            steps.fail(
                "test",
                &format!(
                    "task {task_id} is still {status} after {} s",
                    test_timeout.as_secs()
                ),
                &format!("is the agent slow? run join again to keep waiting, or --test-timeout-secs; {next}"),
            );
            Err(end.exit_code())
        }
        End::Gone => {
            steps.fail(
                "test",
                &format!("the hub no longer has task {task_id} (cancelled?)"),
                "run join again to send another",
            );
            Err(end.exit_code())
        }
    }
}
