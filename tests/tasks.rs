//! Tasks end to end: the real binary, the embedded hub's task queue, and a shell-script agent.

mod support;

use agentcom_sidecar::hub::HubEvent;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use support::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// The test agent: records its wake (the task in `wakes`, its PID in `pids-TASK`) and its
/// argument, writes `.started`, then waits for
/// `release` (if `$HOLD` is set) and writes the result atomically. `$RESULT` overrides the result;
/// `$NO_RESULT` makes it exit without one.
const AGENT_SH: &str = r#"#!/bin/sh
dir="$AGENTCOM_RESULTS_DIR"
echo "$AGENTCOM_TASK_ID" >> "$dir/../wakes"
echo "$$" >> "$dir/../pids-$AGENTCOM_TASK_ID"
printf '%s' "$1" > "$dir/../arg-$AGENTCOM_TASK_ID"
[ -n "$NO_START" ] || : > "$AGENTCOM_STARTED_FILE"
if [ -n "$HOLD" ]; then
  # Gives up when the test's folder is gone (a test that never released it must not leak it).
  while [ ! -e "$dir/../release" ] && [ -d "$(dirname "$dir")" ]; do sleep 0.05; done
fi
[ -z "$NO_RESULT" ] || exit 0
result="${RESULT:-{\"status\":\"success\",\"output\":\"done\",\"tokens_used\":3\}}"
if [ -n "$SLOW" ]; then
  # Written in place, in three pieces, with pauses: never reported half-written.
  printf '{"status":' > "$AGENTCOM_RESULT_FILE"; sleep 0.3
  printf '"success","output":"slow' >> "$AGENTCOM_RESULT_FILE"; sleep 0.3
  printf 'ly"}' >> "$AGENTCOM_RESULT_FILE"
  exit 0
fi
printf '%s' "$result" > "$AGENTCOM_RESULT_FILE.tmp" && mv "$AGENTCOM_RESULT_FILE.tmp" "$AGENTCOM_RESULT_FILE"
"#;

/// The hub, the folder and the config (see [`HubSetup`]), with [`AGENT_SH`] as the agent.
type World = HubSetup;

/// The set-up for `agent`, whose wake command is `wake` (`AGENT`: the agent script's path).
async fn world(agent: &str, wake: &str, extra: Value) -> World {
    HubSetup::start(agent, json!({}))
        .await
        .with_agent(AGENT_SH, wake, extra)
}

/// [`world`], with the binary started and identified at the hub.
async fn spawned(agent: &str, wake: &str, extra: Value) -> (World, Sidecar) {
    let mut w = world(agent, wake, extra).await;
    let sidecar = w.spawn();
    w.identified().await;
    (w, sidecar)
}

#[tokio::test]
async fn a_task_goes_to_the_agent_and_its_result_to_the_hub() {
    let (w, sidecar) = spawned("tasks-happy", "sh AGENT ${TASK_DESCRIPTION} &", json!({})).await;
    let id = w.submit("add a README section");
    let record = w.wait_status(&id, "completed", SECS(10)).await;
    assert_eq!(record.generation, 1);
    assert_eq!(
        record.result,
        Some(json!({"status":"success","output":"done","tokens_used":3,"verification_status":"verified"}))
    );
    assert_eq!(record.tokens_used, Some(3));
    assert_eq!(
        std::fs::read_to_string(w.dir.join(format!("arg-{id}"))).unwrap(),
        "add a README section"
    );
    assert_eq!(w.wakes(&id), 1);
    let complete = &w.sent_of_type("task_complete")[0];
    assert_eq!(complete["generation"], 1);
    assert_eq!(complete["protocol_version"], 1);
    // The task's files are removed once the hub acknowledged; queue.json holds nothing.
    sidecar
        .wait_log_event("outcome_acknowledged", SECS(5))
        .await
        .expect("ack logged");
    for ext in ["started", "json"] {
        assert!(
            !w.results().join(format!("{id}.{ext}")).exists(),
            "{ext} left behind"
        );
    }
    w.wait_queue_empty(SECS(5)).await;
    // wake_result success went out with the attempt number.
    let wake = &w.wait_sent("wake_result", |_| true).await;
    assert_eq!(
        (wake["status"].as_str(), wake["attempt"].as_i64()),
        (Some("success"), Some(1))
    );
}

#[tokio::test]
async fn hostile_descriptions_reach_the_agent_byte_for_byte_and_run_nothing() {
    let (w, _sidecar) = spawned(
        "tasks-hostile",
        r#"sh AGENT ${TASK_DESCRIPTION} "also ${TASK_ID}" 'and ${TASK_ID}'"#,
        json!({}),
    )
    .await;
    let pwned = w.dir.join("pwned");
    for description in [
        format!("$(touch {})", pwned.display()),
        format!("`touch {}`", pwned.display()),
        format!("\"; touch {}; echo \"", pwned.display()),
        format!("'; touch {}; echo '", pwned.display()),
        "trailing backslash \\".to_owned(),
        "a & b | c ; d > e < f %PATH% !x! \n second line \t tab".to_owned(),
        "unicode: héllo wörld ✓ 日本語".to_owned(),
    ] {
        let id = w.submit(&description);
        w.wait_status(&id, "completed", SECS(10)).await;
        assert_eq!(
            std::fs::read_to_string(w.dir.join(format!("arg-{id}"))).unwrap(),
            description
        );
    }
    assert!(!pwned.exists(), "a description ran as code");
}

#[tokio::test]
async fn a_path_traversal_task_id_is_accepted_then_failed_and_touches_nothing() {
    let (w, sidecar) = spawned("tasks-traversal", "sh AGENT", json!({})).await;
    let frame =
        json!({"type":"task_assign","task_id":"../../escape","description":"x","generation":0,"metadata":{}});
    w.hub.push("tasks-traversal", frame).await.unwrap();
    sidecar
        .wait_log_event("task_refused", SECS(5))
        .await
        .expect("refused");
    let failed = w.wait_sent("task_failed", |_| true).await;
    assert_eq!(failed["reason"], "invalid_task_id");
    assert_eq!(failed["task_id"], "../../escape");
    assert!(!w.dir.path().parent().unwrap().join("escape.json").exists());
    // Accepted first: a task_failed before task_accepted stalls the agent at the hub for 60 s.
    let kinds: Vec<Value> = w
        .frames_from_sidecar()
        .into_iter()
        .filter(|f| f["task_id"] == "../../escape")
        .map(|f| f["type"].clone())
        .collect();
    assert_eq!(kinds, [json!("task_accepted"), json!("task_failed")]);
}

#[tokio::test]
async fn a_second_task_while_busy_is_held_and_woken_after_the_first() {
    let (w, _sidecar) = spawned("tasks-double", "HOLD=1 sh AGENT", json!({})).await;
    w.hub.set_double_assign(true);
    let first = w.submit("first");
    let second = w.submit("second");
    w.wait_started(&first).await;
    // Both accepted; only the first woken so far.
    w.wait_sent("task_accepted", |f| f["task_id"] == second.as_str())
        .await;
    assert_eq!(w.wakes(&second), 0);
    w.release();
    w.wait_status(&first, "completed", SECS(10)).await;
    w.wait_status(&second, "completed", SECS(10)).await;
    assert_eq!((w.wakes(&first), w.wakes(&second)), (1, 1));
    assert!(
        w.sent_of_type("task_failed").is_empty(),
        "nothing refused: {:?}",
        w.sent_of_type("task_failed")
    );
}

#[tokio::test]
async fn a_result_written_while_the_sidecar_was_killed_is_reported_with_the_new_generation() {
    let (w, mut sidecar) = spawned("tasks-sigkill", "HOLD=1 sh AGENT", json!({})).await;
    let id = w.submit("survive a crash");
    w.wait_started(&id).await;
    sidecar.kill_hard().await;
    // The agent (in its own process group) finishes while the sidecar is down.
    w.release();
    wait_file(&w.results().join(format!("{id}.json")), SECS(10)).await;
    let _again = w.spawn();
    let record = w.wait_status(&id, "completed", SECS(15)).await;
    let complete = w.sent_of_type("task_complete");
    assert_eq!(complete.len(), 1, "{complete:?}");
    assert_eq!(complete[0]["generation"].as_u64(), Some(record.generation));
    assert!(
        record.generation > 1,
        "completed with the re-assignment's generation"
    );
    assert_eq!(w.wakes(&id), 1, "the agent was not woken again");
    assert_eq!(w.sent_of_type("task_recovering").len(), 1);
}

#[tokio::test]
async fn an_outcome_produced_while_the_hub_is_down_is_delivered_after_it_is_back() {
    let (w, _sidecar) = spawned("tasks-hubdown", "HOLD=1 sh AGENT", json!({})).await;
    let id = w.submit("outlive the hub");
    w.wait_started(&id).await;
    w.hub.stop().await;
    w.release();
    wait_file(&w.results().join(format!("{id}.json")), SECS(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.hub.restart().await.unwrap();
    let record = w.wait_status(&id, "completed", SECS(15)).await;
    let complete = w.sent_of_type("task_complete");
    assert_eq!(
        complete.last().unwrap()["generation"].as_u64(),
        Some(record.generation)
    );
    assert_eq!(w.wakes(&id), 1);
}

#[tokio::test]
async fn cancel_stops_the_agents_process_group_and_clears_its_files() {
    let (w, sidecar) = spawned("tasks-cancel", "HOLD=1 sh AGENT", json!({})).await;
    let id = w.submit("to be cancelled");
    w.wait_started(&id).await;
    let pid = std::fs::read_to_string(w.dir.join(format!("pids-{id}")))
        .unwrap()
        .trim()
        .to_owned();
    assert!(w.hub.cancel_task(&id).await);
    sidecar
        .wait_log_event("task_cancelled", SECS(5))
        .await
        .expect("cancel logged");
    let signal_0 = || {
        std::process::Command::new("kill")
            .args(["-0", &pid])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    poll(
        SECS(5),
        || format!("the agent {pid} still runs after cancel"),
        || (!signal_0()).then_some(()),
    )
    .await;
    let started = w.results().join(format!("{id}.started"));
    poll(
        SECS(5),
        || format!("{} left behind after cancel", started.display()),
        || (!started.exists()).then_some(()),
    )
    .await;
    assert!(w.sent_of_type("task_complete").is_empty());
}

#[tokio::test]
async fn wake_failures_are_retried_then_reported_with_the_attempt_count() {
    let (w, _sidecar) = spawned(
        "tasks-wakefail",
        "exit 3",
        json!({"wake_retry_delays_ms": [50, 50, 50]}),
    )
    .await;
    let id = w.submit_once("x");
    let record = w.wait_status(&id, "dead_letter", SECS(10)).await;
    assert!(
        record
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("wake_failed_after_4_attempts: exit code 3"),
        "{record:?}"
    );
    let attempts: Vec<i64> = w
        .sent_of_type("wake_result")
        .iter()
        .map(|f| f["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2, 3, 4]);
}

#[tokio::test]
async fn no_started_file_fails_the_task_with_confirmation_timeout() {
    let (w, _sidecar) = spawned(
        "tasks-nostart",
        "NO_START=1 HOLD=1 sh AGENT &",
        json!({"confirmation_timeout_ms": 300}),
    )
    .await;
    let id = w.submit_once("x");
    let record = w.wait_status(&id, "dead_letter", SECS(10)).await;
    assert_eq!(record.last_error.as_deref(), Some("confirmation_timeout"));
    w.release();
}

#[tokio::test]
async fn a_result_that_is_not_an_object_fails_the_task() {
    let (w, _sidecar) = spawned("tasks-notobject", "RESULT='[1,2]' sh AGENT", json!({})).await;
    let id = w.submit_once("x");
    let record = w.wait_status(&id, "dead_letter", SECS(10)).await;
    assert_eq!(record.last_error.as_deref(), Some("result_invalid"));
}

#[tokio::test]
async fn a_corrupt_queue_json_is_moved_aside_loudly() {
    let mut w = world("tasks-corrupt", "sh AGENT", json!({})).await;
    std::fs::write(w.dir.join("queue.json"), "{\"active\": {\"task_id\": \"t1\", ").unwrap();
    let sidecar = w.spawn();
    w.identified().await;
    let event = sidecar
        .wait_log_event("queue_corrupt", SECS(5))
        .await
        .expect("queue_corrupt logged");
    let moved = PathBuf::from(event["moved_to"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(&moved).unwrap(),
        "{\"active\": {\"task_id\": \"t1\", "
    );
    // And it still works.
    let id = w.submit("after the corrupt queue");
    w.wait_status(&id, "completed", SECS(10)).await;
}

#[tokio::test]
async fn sigkill_at_each_lifecycle_step_then_restart_completes_the_task_once() {
    for step in ["accepted", "started", "complete_sent"] {
        let agent = format!("tasks-kill-{step}");
        let (mut w, mut sidecar) = spawned(&agent, "HOLD=1 sh AGENT", json!({})).await;
        let id = w.submit(&format!("killed at {step}"));
        match step {
            "accepted" => {
                let id2 = id.clone();
                wait_hub(&mut w.events, SECS(10), "task_accepted", move |e| {
                    matches!(e, HubEvent::Received { text, .. } if text.contains("task_accepted") && text.contains(&id2))
                })
                .await;
            }
            "started" => w.wait_started(&id).await,
            _ => {
                // Killed the moment the outcome is on the wire: the ack may not have been read.
                w.release();
                wait_hub(
                    &mut w.events,
                    SECS(10),
                    "task_complete",
                    |e| matches!(e, HubEvent::Received { text, .. } if text.contains("task_complete")),
                )
                .await;
            }
        }
        sidecar.kill_hard().await;
        w.release();
        let _again = w.spawn();
        let record = w.wait_status(&id, "completed", SECS(15)).await;
        let completed = record
            .history
            .iter()
            .filter(|(event, _)| event == "completed")
            .count();
        assert_eq!(completed, 1, "{step}: {record:?}");
        let refusals: Vec<String> = w
            .hub
            .history()
            .iter()
            .filter_map(|e| match e {
                HubEvent::Sent { text, .. } if text.contains("stale_generation") => Some(text.clone()),
                _ => None,
            })
            .collect();
        assert!(
            refusals.is_empty(),
            "{step}: a stale generation was sent: {refusals:?}"
        );
    }
}

#[tokio::test]
async fn a_result_written_slowly_in_place_is_reported_once_complete() {
    let (w, _sidecar) = spawned("tasks-slow", "SLOW=1 sh AGENT", json!({})).await;
    let id = w.submit("write slowly");
    let record = w.wait_status(&id, "completed", SECS(10)).await;
    // The result, with the verdict of its verification (none asked: auto_pass), whose report
    // reached the hub at the top level of task_complete.
    assert_eq!(
        record.result,
        Some(json!({"status":"success","output":"slowly","verification_status":"verified"}))
    );
    let report = record.verification_report.expect("a verification report");
    assert_eq!(
        (report["status"].clone(), report["run_number"].clone()),
        (json!("auto_pass"), json!(1))
    );
    assert_eq!(record.verification_history, vec![report]);
    assert_eq!(w.sent_of_type("task_complete").len(), 1);
    assert!(w.sent_of_type("task_failed").is_empty());
}

/// Item 6 of issue 8: with the token in `$AGENTCOM_TOKEN` and the service manager's variables
/// set, neither the wake command nor the cancel command inherits any of them.
#[tokio::test]
async fn wake_and_cancel_commands_never_see_the_token_or_the_service_managers_variables() {
    let mut w = world(
        "tasks-env",
        "env > ${RESULTS_DIR}/../wake-env.txt; HOLD=1 sh AGENT",
        json!({"cancel_command": "env > ${RESULTS_DIR}/../cancel-env.txt"}),
    )
    .await;
    let token = w.token.clone();
    let notify = w.dir.join("notify.sock").display().to_string();
    let env = [
        ("AGENTCOM_TOKEN", token.as_str()),
        ("NOTIFY_SOCKET", notify.as_str()),
        ("WATCHDOG_USEC", "60000000"),
        ("WATCHDOG_PID", "1"),
        ("LISTEN_FDS", "0"),
        ("LISTEN_PID", "1"),
        ("LISTEN_FDNAMES", "none"),
    ];
    let _sidecar = Sidecar::spawn_with_env(w.dir.path(), &w.config, &env);
    w.identified().await;
    let id = w.submit("print your environment");
    w.wait_started(&id).await;
    assert!(w.hub.cancel_task(&id).await);
    let cancel_env = w.dir.join("cancel-env.txt");
    wait_file(&cancel_env, SECS(10)).await;
    for file in [w.dir.join("wake-env.txt"), cancel_env] {
        // The file appears at once; give the command a moment to finish writing it.
        let read = || std::fs::read_to_string(&file).unwrap();
        let text = poll(
            SECS(5),
            || format!("{} unfinished: {}", file.display(), read()),
            || Some(read()).filter(|text| text.contains("AGENTCOM_TASK_ID=")),
        )
        .await;
        assert!(text.contains(&format!("AGENTCOM_TASK_ID={id}")), "{text}");
        for (name, _) in env {
            assert!(
                !text.lines().any(|l| l.starts_with(&format!("{name}="))),
                "{name} reached {}",
                file.display()
            );
        }
        assert!(!text.contains(&token), "the token reached {}", file.display());
    }
    w.release();
}

/// Issue 8, items 9 and 11 on the real binary: agents stopped by process group, timeouts.
#[cfg(unix)]
mod agent_processes {
    use super::*;
    use std::path::Path;

    /// Waits until queue.json records the active task's process group (with its leader's start
    /// time): from then on a restarted sidecar can find the agent.
    async fn wait_group_persisted(w: &World) {
        let queue = w.dir.join("queue.json");
        poll(
            SECS(5),
            || {
                format!(
                    "no group in {}",
                    std::fs::read_to_string(&queue).unwrap_or_default()
                )
            },
            || {
                let text = std::fs::read_to_string(&queue).ok()?;
                let queue: Value = serde_json::from_str(&text).ok()?;
                queue["active"]["agent_groups"][0]["start_ticks"]
                    .is_u64()
                    .then_some(())
            },
        )
        .await
    }

    /// Whether `pid` runs (a zombie does not count).
    fn running(pid: u32) -> bool {
        // SAFETY: signal 0 only checks for existence.
        if unsafe { libc::kill(pid as i32, 0) } != 0 {
            return false;
        }
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => !matches!(
                stat.rsplit(')').next().unwrap_or("").trim_start().chars().next(),
                Some('Z' | 'X')
            ),
            Err(_) => !Path::new("/proc/self").exists(),
        }
    }

    /// The agent's PID as it wrote it (`$$` of the agent script), once its `.started` exists.
    async fn agent_pid(w: &World, id: &str) -> u32 {
        w.wait_started(id).await;
        std::fs::read_to_string(w.dir.join(format!("pids-{id}")))
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    async fn assert_gone(pid: u32, what: &str) {
        poll(
            SECS(10),
            || format!("the agent {pid} still runs {what}"),
            || (!running(pid)).then_some(()),
        )
        .await
    }

    /// Children of `parent` that are zombies (Linux; empty elsewhere).
    fn zombie_children(parent: u32) -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return vec![];
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    return false;
                };
                let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
                fields.first() == Some(&"Z") && fields.get(1) == Some(&parent.to_string().as_str())
            })
            .collect()
    }

    /// Item 9 of issue 8: the README's pattern, `my-agent "$1" &`. The wake shell exits at once;
    /// a cancel must still stop the agent it left running in its process group.
    #[tokio::test]
    async fn cancel_stops_an_agent_the_wake_command_backgrounded() {
        let (w, sidecar) = spawned("tasks-cancel-bg", "HOLD=1 sh AGENT &", json!({})).await;
        let id = w.submit("backgrounded, then cancelled");
        let pid = agent_pid(&w, &id).await;
        assert!(running(pid));
        assert!(w.hub.cancel_task(&id).await);
        sidecar
            .wait_log_event("task_cancelled", SECS(5))
            .await
            .expect("cancel logged");
        assert_gone(pid, "after the cancel").await;
    }

    /// An agent that left the wake command's process group (`setsid`) is adopted by the sidecar
    /// (a child subreaper on Linux), found by its environment, stopped on cancel and reaped.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn cancel_stops_an_agent_that_left_the_process_group_and_reaps_it() {
        if !Path::new("/usr/bin/setsid").exists() && !Path::new("/bin/setsid").exists() {
            return eprintln!("SKIPPED: no setsid program");
        }
        let (w, sidecar) = spawned("tasks-cancel-setsid", "HOLD=1 setsid sh AGENT &", json!({})).await;
        let id = w.submit("left the group, then cancelled");
        let pid = agent_pid(&w, &id).await;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        assert_eq!(
            fields[2],
            pid.to_string(),
            "the agent leads its own group: {stat}"
        );
        assert!(w.hub.cancel_task(&id).await);
        assert_gone(pid, "after the cancel, outside the wake's group").await;
        poll(
            SECS(5),
            || {
                format!(
                    "zombies left under the sidecar: {:?}",
                    zombie_children(sidecar.pid())
                )
            },
            || zombie_children(sidecar.pid()).is_empty().then_some(()),
        )
        .await;
    }

    /// What the cancel command starts (it runs while the agent is being stopped, with the same
    /// task in its environment) is not taken for part of the agent.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn stopping_the_agent_spares_what_the_cancel_command_started() {
        let (w, _sidecar) = spawned(
            "tasks-cancel-spared",
            // The agent ignores SIGTERM: it is stopped only by the SIGKILL 2 s later.
            "trap '' TERM; HOLD=1 sh AGENT &",
            json!({"cancel_command": "sleep 30 >/dev/null 2>&1 & echo $! > ${RESULTS_DIR}/../cancel-pid"}),
        )
        .await;
        let id = w.submit("cancelled; the cancel command leaves a helper running");
        let pid = agent_pid(&w, &id).await;
        assert!(w.hub.cancel_task(&id).await);
        let helper_file = w.dir.join("cancel-pid");
        wait_file(&helper_file, SECS(10)).await;
        let helper: u32 = poll(
            SECS(5),
            || "no PID in cancel-pid".to_owned(),
            || std::fs::read_to_string(&helper_file).unwrap().trim().parse().ok(),
        )
        .await;
        assert_gone(pid, "after the cancel (SIGKILL after the grace)").await;
        let still = running(helper);
        // SAFETY: the helper is this test's own sleep; signalling it cannot harm anything else.
        unsafe { libc::kill(helper as i32, libc::SIGKILL) };
        assert!(still, "the cancel command's helper was stopped with the agent");
    }

    /// The process group is in queue.json with its leader's start time: a cancel after a SIGKILL
    /// and restart of the sidecar still stops the backgrounded agent.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn cancel_after_a_sigkill_and_restart_still_stops_the_backgrounded_agent() {
        let (w, mut sidecar) = spawned("tasks-cancel-restart", "HOLD=1 sh AGENT &", json!({})).await;
        let id = w.submit("backgrounded, sidecar killed, then cancelled");
        let pid = agent_pid(&w, &id).await;
        // The group is persisted with the task.
        wait_group_persisted(&w).await;
        sidecar.kill_hard().await;
        assert!(running(pid), "the agent survives the sidecar");
        let again = w.spawn();
        again
            .wait_log_event("task_confirmed", SECS(15))
            .await
            .expect("the restarted sidecar holds the task again");
        assert!(w.hub.cancel_task(&id).await);
        assert_gone(pid, "after a cancel sent to the restarted sidecar").await;
        assert_eq!(w.wakes(&id), 1, "not woken again");
    }

    /// The hand-back when a re-adopt window closes stops the backgrounded agent too, after a
    /// restart: the hub dropped the task (cancelled while the sidecar was down), answers
    /// `task_reassign`, and never assigns it again.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_hand_back_after_a_sigkill_and_restart_stops_the_backgrounded_agent() {
        let (w, mut sidecar) = spawned(
            "tasks-handback-restart",
            "HOLD=1 sh AGENT &",
            json!({"readopt_window_ms": 500}),
        )
        .await;
        let id = w.submit("backgrounded, sidecar killed, task dropped by the hub");
        let pid = agent_pid(&w, &id).await;
        wait_group_persisted(&w).await;
        sidecar.kill_hard().await;
        assert!(w.hub.cancel_task(&id).await);
        let again = w.spawn();
        let event = again
            .wait_log_event("task_handed_back", SECS(15))
            .await
            .expect("handed back");
        assert!(
            event["agent"]
                .as_str()
                .unwrap()
                .starts_with("stopping its agent (process group "),
            "{event}"
        );
        assert_gone(pid, "after the hand-back").await;
    }

    /// Upgrading: a task recovered from the Node sidecar's queue.json, whose agent was the Node
    /// sidecar's child, is handed back saying that nothing could be stopped (not "agent stopped").
    #[tokio::test]
    async fn a_hand_back_of_a_node_task_says_nothing_could_be_stopped() {
        let mut w = world(
            "tasks-handback-node",
            "sh AGENT",
            json!({"readopt_window_ms": 300}),
        )
        .await;
        let node = json!({"active": {"task_id": "node-task-1", "description": "d", "metadata": {},
            "status": "working", "assigned_at": 5, "generation": 2, "wake_attempts": 1, "repo": null,
            "branch": null, "file_hints": [], "success_criteria": [], "verification_steps": [],
            "complexity": null, "skip_verification": false, "verification_timeout_ms": null,
            "routing_decision": null, "max_verification_retries": 0}, "recovering": null});
        std::fs::write(w.dir.join("queue.json"), node.to_string()).unwrap();
        let sidecar = w.spawn();
        w.identified().await;
        let event = sidecar
            .wait_log_event("task_handed_back", SECS(10))
            .await
            .expect("handed back");
        assert_eq!(event["task_id"], "node-task-1");
        let agent = event["agent"].as_str().unwrap();
        assert!(
            agent.starts_with("nothing could be stopped: its agent was not started by this sidecar"),
            "{event}"
        );
        let console = sidecar.stdout();
        let line = console
            .lines()
            .find(|l| l.contains("task_handed_back"))
            .unwrap_or_else(|| panic!("{console}"));
        assert!(
            line.contains("nothing could be stopped") && !line.contains("agent stopped"),
            "{line}"
        );
    }

    /// An agent that exited without a result while the sidecar was down: the restarted sidecar
    /// finds its recorded group empty and fails the task after the grace.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn an_agent_that_exited_while_the_sidecar_was_down_fails_the_task_after_the_grace() {
        let (w, mut sidecar) = spawned(
            "tasks-exit-restart",
            "NO_RESULT=1 HOLD=1 sh AGENT &",
            json!({"agent_exit_grace_ms": 300}),
        )
        .await;
        let id = w.submit_once("dies while the sidecar is down");
        let pid = agent_pid(&w, &id).await;
        wait_group_persisted(&w).await;
        sidecar.kill_hard().await;
        w.release();
        assert_gone(pid, "after the release").await;
        let _again = w.spawn();
        let record = w.wait_status(&id, "dead_letter", SECS(15)).await;
        assert_eq!(
            record.last_error.as_deref(),
            Some("the agent exited without writing a result (agent_exit_grace_ms 300 after its last process ended)")
        );
        assert_eq!(w.wakes(&id), 1, "not woken again");
    }

    /// Item 11: an agent that runs past `task_timeout_ms` is stopped and the task fails with the
    /// time it ran.
    #[tokio::test]
    async fn a_task_past_task_timeout_ms_is_failed_and_its_agent_stopped() {
        let (w, _sidecar) = spawned(
            "tasks-timeout",
            "HOLD=1 sh AGENT &",
            json!({"task_timeout_ms": 1500}),
        )
        .await;
        let id = w.submit_once("runs forever");
        let pid = agent_pid(&w, &id).await;
        let record = w.wait_status(&id, "dead_letter", SECS(10)).await;
        let error = record.last_error.clone().unwrap();
        // It ran at least 1.5 s; a loaded machine may act a little later.
        assert!(
            error.starts_with("task_timeout: the agent ran ")
                && error.contains(" s (task_timeout_ms 1500); its processes were stopped"),
            "{record:?}"
        );
        assert_gone(pid, "after the task timeout").await;
    }

    /// Item 11: an agent that wrote `.started` and exited without a result fails the task after
    /// `agent_exit_grace_ms`, not never.
    #[tokio::test]
    async fn an_agent_that_exits_without_a_result_fails_the_task_after_the_grace() {
        let (w, sidecar) = spawned(
            "tasks-exit-grace",
            "NO_RESULT=1 HOLD=1 sh AGENT &",
            json!({"agent_exit_grace_ms": 300}),
        )
        .await;
        let id = w.submit_once("dies quietly");
        let pid = agent_pid(&w, &id).await;
        // Released once the sidecar has seen it start (and so seen it alive in its group): an
        // agent that dies before the sidecar ever sees it alive looks like a detached one, which
        // only the task timeout covers.
        sidecar
            .wait_log_event("agent_started", SECS(10))
            .await
            .expect("agent_started logged");
        w.release();
        assert_gone(pid, "after the release").await;
        let record = w.wait_status(&id, "dead_letter", SECS(10)).await;
        assert_eq!(
            record.last_error.as_deref(),
            Some("the agent exited without writing a result (agent_exit_grace_ms 300 after its last process ended)")
        );
        assert!(sidecar.log_events().iter().any(|e| e["event"] == "agent_exited"));
    }
}

#[tokio::test]
async fn the_agent_gets_the_folder_it_works_in_as_workspace() {
    let mut w = world(
        "tasks-workspace",
        // (`AGENT` in the wake command stands for the script: the variable's name is spelt around it.)
        "env | grep '^A[G]ENTCOM_WORKSPACE=' > ${RESULTS_DIR}/../ws-env; sh AGENT ${WORKSPACE} &",
        json!({}),
    )
    .await;
    // No workspace prepared for the task: repo_dir is where it works (a name that needs quoting).
    let repo = w.dir.join("it's the repo");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&w.config).unwrap()).unwrap();
    config["repo_dir"] = json!(repo.display().to_string());
    write_private(&w.config, &config.to_string());
    let _sidecar = w.spawn();
    w.identified().await;
    let id = w.submit("work in the repo");
    w.wait_status(&id, "completed", SECS(10)).await;
    let arg = std::fs::read_to_string(w.dir.join(format!("arg-{id}"))).unwrap();
    assert_eq!(arg, repo.display().to_string(), "${{WORKSPACE}}");
    let env = std::fs::read_to_string(w.dir.join("ws-env")).unwrap();
    assert_eq!(env, format!("AGENTCOM_WORKSPACE={}\n", repo.display()));
}
