//! Fault injection on the real binary: SIGKILL at random points across many task lifecycles,
//! the hub killed and restarted, the link black-holed, the results folder deleted, queue.json
//! corrupted between runs, and the disk full at persist time.
//!
//! `cargo test --test faults` runs the CI profile (30 lifecycles); the full run is
//! `FAULT_PROFILE=full cargo test --test faults -- --nocapture` (200 lifecycles). The kill
//! points come from a seeded RNG: the seed is printed, `FAULT_SEED=N` replays it.

mod support;

use agentcom_sidecar::hub::{EmbeddedHub, HubEvent, HubOptions, TaskRecord};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const MS: fn(u64) -> Duration = Duration::from_millis;

/// The agent. `$1` is `MODE:DELAY`: `now` (started and result at once, in the wake command),
/// `slow` (the wake command itself works DELAY seconds), `bg` (the work is backgrounded and the
/// wake command returns at once), `hold` (like slow, but waits for `../release`). Every wake is
/// recorded in `../wakes`; `huge` writes a 100 MiB result and its process group in `../pgids` (killed at the end of the test).
const AGENT_SH: &str = r#"#!/bin/sh
dir="$AGENTCOM_RESULTS_DIR"
top=$(dirname "$dir")
id="$AGENTCOM_TASK_ID"
echo "$id" >> "$dir/../wakes"
cut -d' ' -f5 /proc/$$/stat >> "$dir/../pgids" 2>/dev/null
mode="${1%%:*}"
delay="${1#*:}"
work() {
  : > "$AGENTCOM_STARTED_FILE"
  if [ "$mode" = hold ]; then
    # (and gives up when the test's folder is gone)
    while [ ! -e "$top/release" ] && [ -d "$top" ]; do sleep 0.05; done
  else
    sleep "$delay"
  fi
  tmp="$AGENTCOM_RESULT_FILE.tmp.$$.$1"
  printf '{"status":"success","output":"%s","tokens_used":1}' "$id" > "$tmp" && mv "$tmp" "$AGENTCOM_RESULT_FILE"
}
case "$mode" in
  huge)
    : > "$AGENTCOM_STARTED_FILE"
    # 100 MiB, sparse: costs no disk, and would cost 100 MiB of memory if it were read.
    dd if=/dev/zero of="$AGENTCOM_RESULT_FILE" bs=1 count=0 seek=104857600 2>/dev/null ;;
  bg) (work bg) > /dev/null 2>&1 & ;;
  *) work fg ;;
esac
"#;

/// Kills every process group the agent recorded, on drop (agents outlive the sidecar on purpose).
struct AgentReaper(PathBuf);

impl Drop for AgentReaper {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("release"), "");
        let _ = std::fs::write(self.0.join("fill"), "");
        for pgid in std::fs::read_to_string(self.0.join("pgids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
            .filter(|p| *p > 1)
        {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// The hub, the folder and the config (see [`HubSetup`]) with [`AGENT_SH`] as the agent, and
/// the reaper of the agents it leaves.
struct World {
    // Dropped first: it needs the folder, which `setup` removes.
    _reaper: AgentReaper,
    setup: HubSetup,
}

impl std::ops::Deref for World {
    type Target = HubSetup;

    fn deref(&self) -> &HubSetup {
        &self.setup
    }
}

impl World {
    async fn new(agent: &str, extra: Value) -> World {
        let hub = EmbeddedHub::start(HubOptions::default()).await.unwrap();
        Self::with_hub(agent, extra, hub, None)
    }

    /// A new hub and the binary identified at it, with the default config.
    async fn running(agent: &str) -> (World, Sidecar) {
        let w = World::new(agent, json!({})).await;
        let sidecar = w.spawn();
        w.identified_after(0, SECS(10)).await;
        (w, sidecar)
    }

    /// `url`: connect there instead of the hub (a proxy in front of it).
    fn with_hub(agent: &str, extra: Value, hub: EmbeddedHub, url: Option<String>) -> World {
        let setup = HubSetup::with_hub(hub, url.as_deref(), agent, json!({})).with_agent(
            AGENT_SH,
            "sh AGENT ${TASK_DESCRIPTION}",
            extra,
        );
        World {
            _reaper: AgentReaper(setup.dir.path().to_owned()),
            setup,
        }
    }

    /// Waits until the hub sees the agent identified (on a connection after `after` events).
    async fn identified_after(&self, after: usize, within: Duration) {
        poll(
            within,
            || format!("{} not identified within {within:?}", self.agent),
            || identified_since(&self.hub, after, &self.agent).then_some(()),
        )
        .await
    }

    async fn wait_terminal(&self, id: &str, within: Duration) -> TaskRecord {
        match self.try_wait_terminal(id, within).await {
            Ok(record) => record,
            Err(stuck) => panic!("task {id} {stuck}\n{}", self.dump(id)),
        }
    }

    /// What the sidecar logged and holds about `id`, and the frames it exchanged about it.
    fn dump(&self, id: &str) -> String {
        let log = std::fs::read_to_string(self.dir.join("sidecar.log")).unwrap_or_default();
        let mut lines: Vec<&str> = log.lines().filter(|l| l.contains(id)).collect();
        lines.push("... the log's last 40 lines:");
        let all: Vec<&str> = log.lines().collect();
        lines.extend(&all[all.len().saturating_sub(40)..]);
        let frames: Vec<String> = self
            .hub
            .history()
            .iter()
            .filter_map(|e| match e {
                HubEvent::Received { conn, text, .. } if text.contains(id) => {
                    Some(format!("{conn} <- {text}"))
                }
                HubEvent::Sent { conn, text, .. } if text.contains(id) => Some(format!("{conn} -> {text}")),
                HubEvent::Connected { conn, .. } => Some(format!("{conn} connected")),
                HubEvent::Sent { conn, text, .. } if !text.contains("pong") => {
                    Some(format!("{conn} -> {text}"))
                }
                _ => None,
            })
            .collect();
        let results: Vec<String> = std::fs::read_dir(self.results())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        format!(
            "log:\n{}\nframes:\n{}\nqueue.json: {}\nresults: {results:?}\nwakes: {}",
            lines.join("\n"),
            frames.join("\n"),
            std::fs::read_to_string(self.dir.join("queue.json")).unwrap_or_default(),
            self.wakes(id)
        )
    }

    /// Frames the hub sent that refused an outcome or a generation: must stay empty.
    fn refusals(&self) -> Vec<String> {
        self.hub
            .history()
            .iter()
            .filter_map(|e| match e {
                HubEvent::Sent { text, .. }
                    if text.contains("stale_generation") || text.contains("invalid_state") =>
                {
                    Some(text.clone())
                }
                _ => None,
            })
            .collect()
    }

    /// The per-task invariants: completed exactly once, with the agent's own result (the agent
    /// writes its task id as `output`), and never failed on the way (no `retry`, no dead letter).
    fn check_task(&self, record: &TaskRecord) {
        if let Some(problem) = task_problem(record) {
            panic!(
                "task {}: {problem}\n{}",
                record.task_id,
                self.dump(&record.task_id)
            );
        }
    }

    /// Waits for `id` to end like [`World::wait_terminal`], but returns what it found instead
    /// of panicking: the record when it ended, or `Err` with the record it is stuck in.
    async fn try_wait_terminal(&self, id: &str, within: Duration) -> Result<TaskRecord, String> {
        let deadline = Instant::now() + within;
        loop {
            let record = self.hub.task(id);
            if let Some(r) = &record {
                if r.status == "completed" || r.status == "dead_letter" {
                    return Ok(r.clone());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not completed or dead-lettered within {within:?}: {record:?}"
                ));
            }
            tokio::time::sleep(MS(20)).await;
        }
    }
}

/// What is wrong with a task that should have ended well, if anything: not completed, completed
/// more than once or with another task's result, or failed on the way (a `task_failed` the hub
/// counted as a retry, or a dead letter).
fn task_problem(record: &TaskRecord) -> Option<String> {
    let count = |event: &str| record.history.iter().filter(|(e, _)| e == event).count();
    let output = record.result.as_ref().and_then(|r| r["output"].as_str());
    if record.status != "completed" {
        Some(format!(
            "ended {} ({:?}), not completed: {record:?}",
            record.status, record.last_error
        ))
    } else if count("completed") != 1 {
        Some(format!("completed {} times: {record:?}", count("completed")))
    } else if output != Some(record.task_id.as_str()) {
        Some(format!(
            "completed with another task's result ({output:?}): {record:?}"
        ))
    } else if count("retry") + count("dead_letter") > 0 {
        Some(format!(
            "failed on the way ({} retries): {record:?}",
            count("retry")
        ))
    } else {
        None
    }
}

/// The first `ws_close` the sidecar logs (waiting up to 5 s for it): its reason, and the line.
async fn ws_close(sidecar: &Sidecar) -> (String, Value) {
    let closed = sidecar
        .wait_log_event("ws_close", SECS(5))
        .await
        .expect("ws_close logged");
    (closed["reason"].as_str().unwrap_or("").to_owned(), closed)
}

fn full_profile() -> bool {
    std::env::var("FAULT_PROFILE").is_ok_and(|p| p == "full")
}

fn seed() -> u64 {
    match std::env::var("FAULT_SEED") {
        Ok(s) => s.trim().parse().expect("FAULT_SEED must be an integer"),
        Err(_) => fastrand::u64(..),
    }
}

/// What the sidecar was doing when it was killed: the last task frame it sent on its current
/// connection (`connecting` before it identified, `idle` when it had sent nothing task-related).
fn kill_point(history: &[HubEvent]) -> String {
    let mut point = "connecting".to_owned();
    for event in history {
        match event {
            HubEvent::Identified { .. } => point = "identified".into(),
            HubEvent::Received { text, .. } => {
                let frame: Value = serde_json::from_str(text).unwrap_or(Value::Null);
                let kind = frame["type"].as_str().unwrap_or("?");
                if kind.starts_with("task_") || kind == "wake_result" || kind == "state_report" {
                    point = format!("after {kind}");
                }
            }
            _ => {}
        }
    }
    point
}

#[tokio::test]
async fn sigkill_at_random_points_across_many_lifecycles_loses_nothing() {
    let lifecycles: usize = std::env::var("FAULT_LIFECYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if full_profile() { 200 } else { 30 });
    // The hub's rate limits (60 task frames a minute) would make this take an hour: they get
    // their own campaign below.
    let _ = campaign("faults-kill", lifecycles, false, 600, None).await;
}

/// Restarts every few hundred milliseconds exhaust the hub's rate limit (60 frames a minute),
/// so the hub drops `task_recovering`, `task_accepted` and `task_complete` with `rate_limited`:
/// each must be asked or sent again, and every task still ends once.
#[tokio::test]
async fn sigkill_loops_under_the_hubs_real_rate_limits_lose_nothing() {
    // A burst of kills drains the buckets; then it must recover on its own, in the refill's time.
    let (limited, seed) = campaign(
        "faults-kill-rl",
        8,
        true,
        150,
        Some(if full_profile() { 120 } else { 40 }),
    )
    .await;
    assert!(
        limited > 0,
        "FAULT_SEED={seed}: the hub never rate-limited: the campaign proved nothing"
    );
}

/// How many frames the hub refused with `rate_limited` so far.
fn rate_limited(hub: &EmbeddedHub) -> usize {
    hub.history()
        .iter()
        .filter(|e| matches!(e, HubEvent::Sent { text, .. } if text.contains("\"rate_limited\"")))
        .count()
}

/// Whether `agent` identified on a connection after the first `after` hub events.
fn identified_since(hub: &EmbeddedHub, after: usize, agent: &str) -> bool {
    hub.history()[after..]
        .iter()
        .any(|e| matches!(e, HubEvent::Identified { agent_id, .. } if agent_id == agent))
}

/// Prints its seed line and context on stderr when the test panics while it is alive.
struct OnPanic(std::cell::RefCell<String>, String);

impl Drop for OnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}\n{}", self.1, self.0.borrow());
        }
    }
}

/// `lifecycles` tasks, up to three at a time, with the sidecar killed at random every
/// 0..`max_gap_ms` and restarted, until all have ended. With `max_kills`, tasks keep coming
/// until that many kills, then the rest runs undisturbed. Returns how many frames the hub
/// refused with `rate_limited`, and the seed.
async fn campaign(
    agent: &str,
    lifecycles: usize,
    rate_limits: bool,
    max_gap_ms: u64,
    max_kills: Option<usize>,
) -> (usize, u64) {
    let seed = seed();
    println!("{agent}: {lifecycles} lifecycles, FAULT_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let on_panic = OnPanic(
        std::cell::RefCell::new(String::new()),
        format!("{agent}: FAULT_SEED={seed}"),
    );
    // A second task the hub assigned while another was current (double assignment), killed with
    // the sidecar before it was persisted and accepted, stays assigned at the hub (its
    // acceptance timer covers only the current task) until its stuck sweep (10 min) or until the
    // sidecar identifies again: the new FSM then starts assigned to it and waits 60 s for a
    // task_accepted the sidecar cannot send, since it never learned of the task (C6), leaving
    // the agent unschedulable meanwhile. Here: swept every second, and 10 s to accept.
    let hub = EmbeddedHub::start(HubOptions {
        acceptance_timeout: SECS(10),
        stuck_sweep_interval: SECS(1),
        stuck_after: SECS(10),
        stuck_after_working: SECS(10),
        ..HubOptions::default()
    })
    .await
    .unwrap();
    let w = World::with_hub(
        agent,
        // A finished task the hub answers with task_reassign (it is already completed) is kept
        // for readopt_window_ms in case the hub assigns it again: short here, so queue.json empties.
        json!({"max_pending": 4, "wake_retry_delays_ms": [100, 200, 400], "confirmation_timeout_ms": 20000,
               "readopt_window_ms": 1000}),
        hub,
        None,
    );
    w.hub.set_double_assign(true);
    w.hub.set_rate_limits(rate_limits);
    let started = Instant::now();
    let mut sidecar = w.spawn();
    let mut spawned_at = 0;
    let mut ids: Vec<String> = Vec::new();
    let mut modes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut points: BTreeMap<String, usize> = BTreeMap::new();
    // One line per kill (when, where, which tasks were in flight), printed when a check fails.
    let mut kill_log: Vec<String> = Vec::new();
    let mut kills = 0usize;
    let budget = if rate_limits {
        Duration::from_secs(8 * lifecycles as u64 + 30)
    } else {
        Duration::from_millis(1500 * lifecycles as u64 + 10_000)
    };
    let terminal = |id: &String| {
        w.hub
            .task(id)
            .is_some_and(|r| r.status == "completed" || r.status == "dead_letter")
    };
    loop {
        let in_flight = ids.iter().filter(|id| !terminal(id)).count();
        let done = match max_kills {
            // A burst of kills: as many lifecycles as it takes (at least `lifecycles`), and under
            // rate limits until the hub has refused a frame (on a loaded machine a burst may
            // need more kills to get there), up to four times as many.
            Some(max) => kills >= max && (!rate_limits || rate_limited(&w.hub) > 0) || kills >= 4 * max,
            None => ids.len() == lifecycles && in_flight == 0,
        };
        if done || started.elapsed() > budget {
            break;
        }
        // Up to three tasks in flight, each with its own agent speed.
        let want = rng.usize(1..=3);
        for _ in in_flight..want {
            if ids.len() == lifecycles && max_kills.is_none() {
                break;
            }
            let (mode, delay) = match rng.u8(0..3) {
                0 => ("now", 0),
                1 => ("slow", rng.u64(50..800)),
                _ => ("bg", rng.u64(0..800)),
            };
            *modes.entry(mode).or_default() += 1;
            ids.push(w.submit_with_retries(&format!("{mode}:{}.{:03}", delay / 1000, delay % 1000), 5));
        }
        // Let it run a random while, then kill it wherever it is. Three kills in four count that
        // while from the moment it identified, so that a slow start (a loaded machine) does not
        // turn every kill into one before it sent anything; the fourth lands wherever start-up is.
        if rng.u8(0..4) != 0 {
            let deadline = Instant::now() + SECS(10);
            while Instant::now() < deadline && !identified_since(&w.hub, spawned_at, agent) {
                tokio::time::sleep(MS(10)).await;
            }
        }
        tokio::time::sleep(MS(rng.u64(0..max_gap_ms))).await;
        let history = w.hub.history();
        let point = kill_point(&history[spawned_at..]);
        *points.entry(point.clone()).or_default() += 1;
        sidecar.kill_hard().await;
        kills += 1;
        let flying: Vec<String> = ids
            .iter()
            .filter(|id| !terminal(id))
            .map(|id| {
                let status = w.hub.task(id).map(|r| r.status).unwrap_or_default();
                format!("{id} ({status})")
            })
            .collect();
        kill_log.push(format!(
            "kill {kills} at +{} ms, {point}; in flight: {}",
            started.elapsed().as_millis(),
            flying.join(", ")
        ));
        *on_panic.0.borrow_mut() = kill_log.join("\n");
        tokio::time::sleep(MS(rng.u64(0..150))).await;
        spawned_at = w.hub.history().len();
        sidecar = w.spawn();
    }
    // No more kills: everything must settle.
    if max_kills.is_some() {
        while ids.len() < lifecycles {
            ids.push(w.submit_with_retries("now:0", 5));
        }
    }
    // Every task must end completed, once, with its own result; anything else fails the test
    // (a dead letter or a retry too: a task turned into a failure is a lost task).
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut problems: Vec<(String, String)> = Vec::new();
    let settle_by = Instant::now() + SECS(90);
    for id in &ids {
        match w
            .try_wait_terminal(id, settle_by.saturating_duration_since(Instant::now()))
            .await
        {
            Ok(record) => {
                *outcomes.entry(record.status.clone()).or_default() += 1;
                if let Some(problem) = task_problem(&record) {
                    problems.push((id.clone(), problem));
                }
            }
            Err(stuck) => problems.push((id.clone(), stuck)),
        }
    }
    let failed_frames: Vec<Value> = w
        .sent_of_type("task_failed")
        .into_iter()
        .filter(|f| ids.iter().any(|id| f["task_id"] == id.as_str()))
        .collect();
    let refusals = w.refusals();
    if !problems.is_empty() || !failed_frames.is_empty() || !refusals.is_empty() {
        let mut report = format!(
            "{agent}: FAULT_SEED={seed} (replay with FAULT_SEED={seed} cargo test --test faults sigkill): \
             {} of {} tasks went wrong, {} task_failed sent, {} outcomes refused; {kills} kills\n",
            problems.len(),
            ids.len(),
            failed_frames.len(),
            refusals.len()
        );
        for (id, problem) in &problems {
            report += &format!("- task {id}: {problem}\n");
        }
        for frame in &failed_frames {
            report += &format!("- the sidecar sent {frame}\n");
        }
        for refusal in &refusals {
            report += &format!("- the hub refused an outcome: {refusal}\n");
        }
        report += &format!("kill points: {points:?}\n{}\n", kill_log.join("\n"));
        for (id, _) in problems.iter().take(3) {
            report += &format!("==== what happened to {id}:\n{}\n", w.dump(id));
        }
        panic!("{report}");
    }
    // The sidecar must end up connected with nothing held.
    *on_panic.0.borrow_mut() = format!("kill points: {points:?}\n{}", kill_log.join("\n"));
    w.identified_after(spawned_at, SECS(10)).await;
    w.wait_queue_empty(SECS(20)).await;
    let records: Vec<TaskRecord> = ids.iter().filter_map(|id| w.hub.task(id)).collect();
    let count = |event: &str| -> usize {
        records
            .iter()
            .map(|r| r.history.iter().filter(|(e, _)| e == event).count())
            .sum()
    };
    let rewoken = ids.iter().filter(|id| w.wakes(id) > 1).count();
    let limited = rate_limited(&w.hub);
    println!(
        "{agent} (seed {seed}, rate limits {rate_limits}): {} lifecycles, {kills} kills in {:.1} s\n  agents: {modes:?}\n  \
         kill points: {points:?}\n  outcomes: {outcomes:?}; hub reclaims {}, retries {}; \
         tasks woken more than once {rewoken}; frames rate-limited {limited}; stale or duplicate outcomes 0",
        ids.len(),
        started.elapsed().as_secs_f64(),
        count("reclaimed"),
        count("retry"),
    );
    assert!(
        ids.len() >= lifecycles,
        "FAULT_SEED={seed}: the campaign ran out of time"
    );
    assert!(
        kills >= max_kills.unwrap_or(lifecycles / 2),
        "FAULT_SEED={seed}: only {kills} kills"
    );
    (limited, seed)
}

#[tokio::test]
async fn the_hub_killed_and_restarted_mid_task_loses_nothing() {
    let (w, _sidecar) = World::running("faults-hub").await;
    // 1. Stopped while the agent works, back before it finishes.
    let working = w.submit_with_retries("hold:0", 3);
    w.wait_started(&working).await;
    w.hub.stop().await;
    let mark = w.hub.history().len();
    w.hub.restart().await.unwrap();
    w.identified_after(mark, SECS(10)).await;
    w.release();
    // 2. Stopped the moment a task is assigned (before or after task_accepted reached it).
    let mark = w.hub.history().len();
    let fresh = w.submit_with_retries("now:0", 3);
    w.hub.stop().await;
    tokio::time::sleep(MS(200)).await;
    w.hub.restart().await.unwrap();
    w.identified_after(mark + 1, SECS(10)).await;
    // 3. Stopped while an outcome is on its way (the agent finishes while the hub is down).
    let late = w.submit_with_retries("slow:0.3", 3);
    w.wait_started(&late).await;
    w.hub.stop().await;
    wait_file(&w.results().join(format!("{late}.json")), SECS(10)).await;
    w.hub.restart().await.unwrap();
    for id in [&working, &fresh, &late] {
        let record = w.wait_terminal(id, SECS(20)).await;
        assert_eq!(record.status, "completed", "{record:?}");
        w.check_task(&record);
    }
    assert_eq!((w.wakes(&working), w.wakes(&late)), (1, 1), "woken again");
    assert!(w.refusals().is_empty(), "{:?}", w.refusals());
    w.wait_queue_empty(SECS(10)).await;
}

#[tokio::test]
async fn a_link_black_holed_mid_task_is_dropped_and_the_outcome_delivered_once() {
    // The hub notices the dead connection only by its idle timeout (3 s here instead of 60 s).
    // Until then it pushes to the old socket (§2.3, C19): a task assigned in that window is lost
    // on the dead link and, as the old socket's close reclaims nothing, comes back only when the
    // acceptance timer of the agent's FSM (the one the sidecar's identify on the new link or its
    // identify again after its own agent_left made) runs out: 60 s on the hub, 5 s here.
    let hub = EmbeddedHub::start(HubOptions {
        acceptance_timeout: SECS(5),
        idle_timeout: SECS(3),
        ..HubOptions::default()
    })
    .await
    .unwrap();
    let hole = Arc::new(AtomicBool::new(false));
    let url = proxy(hub.addr(), hole.clone()).await;
    let w = World::with_hub("faults-hole", json!({}), hub, Some(url));
    let sidecar = w.spawn();
    w.identified_after(0, SECS(10)).await;
    let held = w.submit_with_retries("hold:0", 3);
    w.wait_started(&held).await;
    hole.store(true, Ordering::SeqCst);
    w.release();
    sidecar
        .wait_log_event("heartbeat_timeout", SECS(10))
        .await
        .expect("the silent link is noticed");
    let record = w.wait_terminal(&held, SECS(20)).await;
    assert_eq!(record.status, "completed", "{record:?}");
    w.check_task(&record);
    // And the next task goes through the new connection.
    let next = w.submit_with_retries("now:0", 3);
    let record = w.wait_terminal(&next, SECS(20)).await;
    assert_eq!(record.status, "completed", "{record:?}");
    assert_eq!(w.wakes(&held), 1);
    assert!(w.refusals().is_empty(), "{:?}", w.refusals());
}

#[tokio::test]
async fn the_results_folder_deleted_while_running_is_recreated_and_rewatched() {
    let (w, sidecar) = World::running("faults-rmdir").await;
    // Deleted while the agent works: re-created (by the watcher's fallback check) before the
    // agent writes its result into it, and the result is still picked up.
    let held = w.submit_with_retries("hold:0", 3);
    w.wait_started(&held).await;
    std::fs::remove_dir_all(w.results()).unwrap();
    wait_file(&w.results(), SECS(10)).await;
    w.release();
    let record = w.wait_terminal(&held, SECS(15)).await;
    assert_eq!(record.status, "completed", "{record:?}");
    w.check_task(&record);
    // Deleted while idle: the next task is woken and reported as usual.
    sidecar
        .wait_log_event("outcome_acknowledged", SECS(5))
        .await
        .expect("acknowledged");
    std::fs::remove_dir_all(w.results()).unwrap();
    let next = w.submit_with_retries("bg:0.1", 3);
    let record = w.wait_terminal(&next, SECS(15)).await;
    assert_eq!(record.status, "completed", "{record:?}");
    // And once more, replaced by a fresh folder at the same path while a task runs.
    let replaced = w.submit_with_retries("slow:0.6", 3);
    w.wait_started(&replaced).await;
    let aside = w.dir.join("results-old");
    std::fs::rename(w.results(), &aside).unwrap();
    // (the watcher may already have re-created it)
    std::fs::create_dir_all(w.results()).unwrap();
    let record = w.wait_terminal(&replaced, SECS(15)).await;
    // The agent wrote into the folder it was given (by path): the new one.
    assert_eq!(record.status, "completed", "{record:?}");
    assert!(w.refusals().is_empty(), "{:?}", w.refusals());
    assert!(sidecar.stderr().is_empty(), "{}", sidecar.stderr());
}

/// Turns a good queue.json into a bad one.
type Corruption = dyn Fn(&[u8], &mut fastrand::Rng) -> Vec<u8>;

#[tokio::test]
async fn a_queue_json_truncated_or_corrupted_between_runs_is_moved_aside_and_the_sidecar_runs_on() {
    let seed = seed();
    println!("queue corruption: FAULT_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let w = World::new("faults-queue", json!({})).await;
    let mut corrupt_events = 0;
    let variants: Vec<(&str, Box<Corruption>)> = vec![
        (
            "truncated at a random byte",
            Box::new(|b: &[u8], rng: &mut fastrand::Rng| b[..rng.usize(1..b.len() - 3)].to_vec()),
        ),
        (
            "truncated to nothing",
            Box::new(|_: &[u8], _: &mut fastrand::Rng| Vec::new()),
        ),
        (
            "zeroed (a lost page)",
            Box::new(|b: &[u8], _: &mut fastrand::Rng| vec![0u8; b.len()]),
        ),
        (
            "random bytes overwritten",
            Box::new(|b: &[u8], rng: &mut fastrand::Rng| {
                let mut b = b.to_vec();
                let at = rng.usize(0..b.len() / 2);
                for byte in &mut b[at..at + 8] {
                    *byte = 0xff;
                }
                b
            }),
        ),
        (
            "not a queue",
            Box::new(|_: &[u8], _: &mut fastrand::Rng| b"[1, 2, 3]\n".to_vec()),
        ),
        (
            "a hostile task id",
            Box::new(|_: &[u8], _: &mut fastrand::Rng| br#"{"active": {"task_id": "../../x"}}"#.to_vec()),
        ),
    ];
    for (what, corrupt) in variants {
        let _ = std::fs::remove_file(w.dir.join("release"));
        let mut sidecar = w.spawn();
        let id = w.submit_with_retries("hold:0", 3);
        w.wait_started(&id).await;
        sidecar.kill_hard().await;
        let good = std::fs::read(w.dir.join("queue.json")).unwrap();
        assert!(good.len() > 20, "{what}: queue.json holds the task");
        let bad = corrupt(&good, &mut rng);
        std::fs::write(w.dir.join("queue.json"), &bad).unwrap();
        w.release();
        let mark = w.hub.history().len();
        let sidecar = w.spawn();
        corrupt_events += 1;
        let log = sidecar
            .wait_log_count("queue_corrupt", corrupt_events, SECS(10))
            .await;
        let event = log
            .iter()
            .filter(|e| e["event"] == "queue_corrupt")
            .nth(corrupt_events - 1)
            .unwrap_or_else(|| panic!("{what}: no queue_corrupt event"));
        let moved = PathBuf::from(event["moved_to"].as_str().unwrap());
        assert_eq!(
            std::fs::read(&moved).unwrap(),
            bad,
            "{what}: moved aside as it was"
        );
        assert!(
            !event["error"].as_str().unwrap_or("").is_empty(),
            "{what}: {event}"
        );
        w.identified_after(mark, SECS(10)).await;
        // The hub took the task back when the connection dropped and assigns it again: it ends
        // once, from the agent's result, although the sidecar forgot it.
        let record = w.wait_terminal(&id, SECS(20)).await;
        w.check_task(&record);
        assert_eq!(record.status, "completed", "{what}: {record:?}");
        // The sidecar runs on and writes a good queue.json again.
        let next = w.submit_with_retries("now:0", 3);
        let record = w.wait_terminal(&next, SECS(20)).await;
        assert_eq!(record.status, "completed", "{what}: {record:?}");
        w.wait_queue_empty(SECS(10)).await;
        drop(sidecar);
    }
    assert!(w.refusals().is_empty(), "{:?}", w.refusals());
}

/// A task that could not be persisted (issue 8, item 10): never answered, neither
/// `task_accepted` nor `task_failed` (the hub's agent FSM ignores a failure before acceptance,
/// stalls the agent 60 s and still counts a retry); instead the link is dropped, so the hub
/// takes the task back at once without a retry, and the sidecar stays away, saying why, while
/// queue.json cannot be written. Returns the hub history's length when it was checked.
async fn dropped_for_persist(w: &World, sidecar: &Sidecar, id: &str, why: &str) -> usize {
    let unwritable = sidecar
        .wait_log_event("storage_unwritable", SECS(10))
        .await
        .unwrap_or_else(|| panic!("storage_unwritable not logged\n{}", w.dump(id)));
    let error = unwritable["error"].as_str().unwrap_or_default().to_lowercase();
    assert!(error.contains(why), "{unwritable}");
    assert_eq!(unwritable["task_ids"], json!([id]), "{unwritable}");
    for event in ["persist_failed", "link_held"] {
        assert!(
            sidecar.log_events().iter().any(|e| e["event"] == event),
            "{event} not logged"
        );
    }
    // Reclaimed on the disconnect: back in the queue, no retry counted, no failure recorded.
    let deadline = Instant::now() + SECS(5);
    while w.hub.task(id).is_some_and(|t| t.status != "queued") {
        assert!(Instant::now() < deadline, "not reclaimed:\n{}", w.dump(id));
        tokio::time::sleep(MS(20)).await;
    }
    let record = w.hub.task(id).unwrap();
    assert_eq!(
        (record.retry_count, record.last_error.clone()),
        (0, None),
        "{record:?}"
    );
    let events: Vec<&str> = record.history.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(events, ["queued", "assigned", "reclaimed"], "{record:?}");
    for kind in ["task_accepted", "task_failed"] {
        assert!(
            !w.sent_of_type(kind).iter().any(|f| f["task_id"] == id),
            "{kind} sent for a task that could not be persisted"
        );
    }
    assert_eq!(w.wakes(id), 0, "an unpersisted task was woken");
    // It stays away while the storage is broken (its first probes fail).
    let seen = w.hub.history().len();
    tokio::time::sleep(MS(1500)).await;
    let back = w.hub.history()[seen..]
        .iter()
        .any(|e| matches!(e, HubEvent::Connected { .. }));
    assert!(
        !back,
        "reconnected while queue.json cannot be written\n{}",
        w.dump(id)
    );
    w.hub.history().len()
}

/// Once queue.json can be written, the sidecar says so, comes back, and the task the hub
/// assigns again completes once, with its own result and no retry counted.
async fn back_once_writable(w: &World, sidecar: &Sidecar, id: &str, seen: usize) {
    sidecar
        .wait_log_event("storage_writable", SECS(15))
        .await
        .unwrap_or_else(|| panic!("storage_writable not logged\n{}", w.dump(id)));
    w.identified_after(seen, SECS(10)).await;
    let record = w.wait_terminal(id, SECS(20)).await;
    w.check_task(&record);
    assert_eq!(record.status, "completed", "{record:?}");
    assert_eq!(record.retry_count, 0, "{record:?}");
    assert_eq!(w.wakes(id), 1);
    assert!(w.sent_of_type("task_failed").is_empty());
    assert!(w.refusals().is_empty(), "{:?}", w.refusals());
}

#[tokio::test]
async fn a_full_disk_at_persist_time_drops_the_link_until_writable_and_loses_no_task() {
    // A 64 KiB tmpfs in a private mount namespace holds queue.json (and the instance lock); a
    // helper inside the namespace fills it when `fill` appears, and empties it on `release`.
    let w = World::new("faults-enospc", json!({})).await;
    let state = w.dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let unshare: &[&str] = if unsafe_is_root() { &["-m"] } else { &["-r", "-m"] };
    let probe = std::process::Command::new("unshare")
        .args(unshare)
        .args(["sh", "-c", "mount -t tmpfs -o size=64k tmpfs \"$1\"", "sh"])
        .arg(&state)
        .stderr(std::process::Stdio::piped())
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let why = format!(
                "cannot mount a tmpfs in a private namespace ({}); the injected write error test still runs",
                stderr.trim()
            );
            return cannot_run_here("a_full_disk_at_persist_time", &why);
        }
        Err(e) => {
            let why = format!("no unshare ({e}); the injected write error test still runs");
            return cannot_run_here("a_full_disk_at_persist_time", &why);
        }
    }
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&w.config).unwrap()).unwrap();
    config["queue_file"] = state.join("queue.json").display().to_string().into();
    write_private(&w.config, &config.to_string());
    const SCRIPT: &str = r#"
mount -t tmpfs -o size=64k tmpfs "$1" || exit 97
(
  while [ ! -e "$5" ] && [ -e "$4" ]; do sleep 0.05; done
  dd if=/dev/zero of="$1/filler" bs=4096 2>/dev/null
  : > "$5.done"
  while [ ! -e "$2" ] && [ -e "$4" ]; do sleep 0.05; done
  rm -f "$1/filler"
) &
exec "$3" run --config "$4"
"#;
    let child = scrub_env(&mut std::process::Command::new("unshare"))
        .args(unshare)
        .args(["sh", "-c", SCRIPT, "sh"])
        .arg(&state)
        .arg(w.dir.join("release"))
        .arg(env!("CARGO_BIN_EXE_agentcom-sidecar"))
        .arg(&w.config)
        .arg(w.dir.join("fill"))
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(w.dir.join("stdout.txt")).unwrap())
        .stderr(std::fs::File::create(w.dir.join("stderr.txt")).unwrap())
        .spawn()
        .unwrap();
    let mut sidecar = Sidecar {
        child,
        dir: w.dir.path().to_owned(),
    };
    if let Some(status) = sidecar.wait_exit(MS(1500)).await {
        panic!(
            "the sidecar exited ({status}) on a full disk:\n{}{}",
            sidecar.stdout(),
            sidecar.stderr()
        );
    }
    w.identified_after(0, SECS(10)).await;
    std::fs::write(w.dir.join("fill"), "").unwrap();
    wait_file(&w.dir.join("fill.done"), SECS(10)).await;
    let id = w.submit_with_retries("now:0", 2);
    let seen = dropped_for_persist(&w, &sidecar, &id, "no space left").await;
    // Space again: the probe succeeds, the sidecar comes back and completes the task.
    w.release();
    back_once_writable(&w, &sidecar, &id, seen).await;
}

fn unsafe_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n")
}

#[tokio::test]
async fn an_injected_write_error_at_persist_time_drops_the_link_until_writable_and_loses_no_task() {
    // Works as root too: the store's temp file name is taken by a folder, so creating it fails.
    let (w, sidecar) = World::running("faults-eisdir").await;
    let blocker = w.dir.join(format!("queue.json.tmp-{}", sidecar.pid()));
    std::fs::create_dir_all(blocker.join("occupied")).unwrap();
    let id = w.submit_with_retries("now:0", 2);
    let seen = dropped_for_persist(&w, &sidecar, &id, "directory").await;
    std::fs::remove_dir_all(&blocker).unwrap();
    back_once_writable(&w, &sidecar, &id, seen).await;
    w.wait_queue_empty(SECS(10)).await;
}

/// The peak resident memory of a process, in KiB (Linux).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_100_mib_result_file_is_refused_as_too_large_without_being_read() {
    let (w, sidecar) = World::running("faults-huge").await;
    let id = w.submit_with_retries("huge:0", 1);
    let record = w.wait_terminal(&id, SECS(20)).await;
    assert_eq!(record.status, "dead_letter", "{record:?}");
    assert_eq!(record.last_error.as_deref(), Some("result_invalid"));
    let event = sidecar
        .wait_log_event("result_invalid", SECS(5))
        .await
        .expect("result_invalid logged");
    assert!(
        event.to_string().contains("104857600 bytes, over the size limit"),
        "{event}"
    );
    let peak = peak_rss_kib(sidecar.pid());
    assert!(peak > 0 && peak < 32 * 1024, "the sidecar peaked at {peak} KiB");
}

#[tokio::test]
async fn an_over_limit_frame_from_the_hub_is_dropped_with_the_link_and_logged() {
    let (w, sidecar) = World::running("faults-bigframe").await;
    let mark = w.hub.history().len();
    // 2 MiB: over the 1 MiB limit; the hub sends it whole.
    let frame =
        json!({"type": "task_assign", "task_id": "big", "generation": 1, "description": "x".repeat(2 << 20)});
    w.hub.push("faults-bigframe", frame).await.unwrap();
    w.identified_after(mark, SECS(10)).await;
    let (reason, closed) = ws_close(&sidecar).await;
    assert!(reason.contains("Message too long"), "{closed}");
    let log = std::fs::read_to_string(w.dir.join("sidecar.log")).unwrap();
    assert!(!log.contains("\"task_received\""), "the frame was used: {log}");
    // And tasks still flow on the new connection.
    let id = w.submit_with_retries("now:0", 3);
    assert_eq!(w.wait_terminal(&id, SECS(20)).await.status, "completed");
    let peak = peak_rss_kib(sidecar.pid());
    assert!(peak > 0 && peak < 32 * 1024, "the sidecar peaked at {peak} KiB");
}

#[tokio::test]
async fn a_100_mib_frame_is_refused_from_its_header_not_buffered() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    // A fake hub: identifies the sidecar, then announces a 100 MiB text frame and streams it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let dir = TempDir::new("faults-100mib");
    write_private(
        &dir.join("config.json"),
        &config_json("faults-100mib", "faults-token-0123456789", &url, json!({})),
    );
    let sidecar = Sidecar::spawn(dir.path(), &dir.join("config.json"));
    let accept = async {
        let (tcp, _) = listener.accept().await.unwrap();
        tokio_tungstenite::accept_async(tcp).await.unwrap()
    };
    let mut ws = tokio::time::timeout(SECS(10), accept).await.expect("connected");
    let identify = tokio::time::timeout(SECS(5), ws.next()).await.expect("identify");
    assert!(format!("{identify:?}").contains("identify"));
    ws.send(Message::text(
        json!({"type": "identified", "agent_id": "faults-100mib"}).to_string(),
    ))
    .await
    .unwrap();
    const LEN: u64 = 100 << 20;
    let tcp = ws.get_mut();
    let mut header = vec![0x81u8, 127];
    header.extend_from_slice(&LEN.to_be_bytes());
    tcp.write_all(&header).await.unwrap();
    let chunk = vec![b'a'; 64 << 10];
    let mut sent = 0u64;
    let streaming = async {
        while sent < LEN {
            if tcp.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len() as u64;
        }
    };
    let _ = tokio::time::timeout(SECS(20), streaming).await;
    assert!(
        sent < LEN / 2,
        "the sidecar read {sent} bytes of an over-limit frame"
    );
    // It reconnects.
    let again = tokio::time::timeout(SECS(10), listener.accept()).await;
    assert!(again.is_ok(), "no reconnect after the refused frame");
    let peak = peak_rss_kib(sidecar.pid());
    assert!(peak > 0 && peak < 32 * 1024, "the sidecar peaked at {peak} KiB");
    let (reason, closed) = ws_close(&sidecar).await;
    assert!(
        reason.contains("Message too long: 104857600 > 1048576"),
        "{closed}"
    );
}
