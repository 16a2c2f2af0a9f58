//! Benchmarks at the limits: the figures of the README's "Performance" table, measured on the real
//! binary against the embedded hub on loopback (127.0.0.1). A benchmark, not a test: it prints a
//! table, writes the same figures as JSON, and asserts nothing (targets are judged, not enforced).
//!
//! Run: `cargo bench --bench limits`. The JSON goes to `$CARGO_TARGET_DIR/bench-figures.json`
//! (`target/bench-figures.json` when CARGO_TARGET_DIR is unset; `BENCH_JSON` overrides the path).
//!
//! What it measures, each figure as the median and p99 (nearest rank) of repeated samples:
//! - idle: `BENCH_RUNS` (20) sidecars spawned one after another, each timed spawn -> `identified`
//!   (HubEvent `at`); once all are identified, VmRSS of each from /proc/PID/status, then CPU over
//!   `BENCH_IDLE_SECS` (60) s of idling: utime+stime from /proc/PID/stat (10 ms ticks, so also
//!   pooled over all of them) and the nanosecond run time from /proc/PID/task/*/schedstat;
//! - the task path: `BENCH_TASKS` (200) tasks one at a time through one sidecar whose wake command
//!   only touches `.started`; the bench writes and renames each result. `task_assign` sent ->
//!   `task_accepted` received (includes the fsync'd queue.json write) and result renamed ->
//!   `task_complete` received, both timed at the hub (HubEvent `at`);
//! - hub restart -> identified again: `BENCH_RESTARTS` (20) restarts of the hub on the same port
//!   with one sidecar at the defaults (reconnect_initial_ms 1000, jitter 0.5), then with
//!   reconnect_initial_ms 100;
//! - throughput: `BENCH_THROUGHPUT` (10 000) tasks through one sidecar whose wake command is the
//!   whole agent (touches `.started`, writes the result to `.tmp`, renames it), each task
//!   submitted to the hub once the previous one completed (`BENCH_AHEAD` above 1 queues more at
//!   the hub); tasks per second and the sidecar's own CPU (utime+stime) per task. Then
//!   `BENCH_BENCH_TASKS` (30) tasks whose wake command only touches `.started` while the bench
//!   writes each result as soon as `.started` is there (polled every 1 ms);
//! - scale: `BENCH_FLEET` (500) sidecar processes against one hub, `BENCH_FLEET_RUNS` (3) fleets at
//!   jitter 0.5 and as many at jitter 1.0: time from the first spawn until all are identified,
//!   total VmRSS, then one hub restart each: the most `Connected` events in any 100 ms window and
//!   the time until all are identified again. Children are spawned from the main thread (the hub
//!   runs on two tokio workers) in batches of 50 with a yield between batches. Each sidecar holds
//!   an inotify instance while the user has one left (`fs.inotify.max_user_instances`, 128 by
//!   default); past it a sidecar polls its results folder instead (the bench notes it);
//! - fleet tasks: `BENCH_FLEET_TASKS` (200) sidecars at once at the machine's inotify limit, each
//!   with a capability of its own, then one task routed to each: how many identify, how many
//!   complete their task and how long that took, and how many polled for want of inotify;
//! - stream: one `standard` task routed to a fake Ollama (registered in the hub's LLM registry)
//!   that answers `BENCH_STREAM_TOKENS` (100 000) tokens `BENCH_STREAM_DELAY_US` (1000) us apart,
//!   executed by the sidecar itself (`direct_execution` auto) with the hub's rate limits on: the
//!   sidecar's CPU (schedstat, and utime+stime) per token and per `task_progress` frame the hub
//!   received, its peak memory (VmHWM, and VmRSS sampled every 20 ms), the time from the fake
//!   writing its first token to the hub receiving the first `task_progress` with an
//!   `execution_event` (the fake's `first_token_at` and the hub's `at`, both this process's
//!   monotonic clock), and the rate-limit frames the hub sent (none expected). Then
//!   `BENCH_STREAM_SHORTS` (50) tasks of 20 tokens with the limits off, for that time's spread.
//!
//! The task path and throughput sections switch the hub's rate limits off
//! (`EmbeddedHub::set_rate_limits(false)`): the hub allows an agent 60 "normal" messages a minute,
//! and each task takes two (`task_accepted`, `task_complete`), so with them on it measures the hub.
//!
//! `BENCH_SCALE` (a fraction, e.g. 0.1) shrinks the fleet, the task counts and the idle time for a
//! quick run. Every child is killed at the end, also on panic (a guard, plus PR_SET_PDEATHSIG).
//! Linux only (/proc).

// The tests' helpers: `support::binary()` starts the binary with a scrubbed environment;
// `support::TempDir` is the scratch folder.
#[cfg(target_os = "linux")]
#[path = "../tests/support/mod.rs"]
mod support;

#[cfg(target_os = "linux")]
mod linux {
    use super::support::{self, TempDir};
    use agentcom_sidecar::hub::{EmbeddedHub, HubEvent, HubOptions, TaskSpec};
    use serde_json::{json, Value};
    use std::collections::HashSet;
    use std::os::unix::process::CommandExt;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Stdio};
    use std::time::Duration;
    use tokio::sync::broadcast::error::RecvError;
    use tokio::sync::broadcast::Receiver;
    use tokio::time::Instant;

    const MIB: f64 = 1024.0 * 1024.0;

    fn env_f64(name: &str, default: f64) -> f64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// `default` (or the env override), times BENCH_SCALE, at least `min`.
    fn scaled(name: &str, default: usize, min: usize) -> usize {
        let scale = env_f64("BENCH_SCALE", 1.0);
        let n = std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default);
        ((n as f64 * scale).round() as usize).max(min)
    }

    /// Every child the bench started; killed and reaped on drop (also when unwinding).
    #[derive(Default)]
    struct Procs(Vec<Child>);

    impl Procs {
        fn kill_all(&mut self) {
            for child in &mut self.0 {
                let _ = child.kill();
            }
            for child in &mut self.0 {
                let _ = child.wait();
            }
            self.0.clear();
        }

        fn pids(&self) -> Vec<u32> {
            self.0.iter().map(Child::id).collect()
        }
    }

    impl Drop for Procs {
        fn drop(&mut self) {
            self.kill_all();
        }
    }

    /// Writes `dir/config.json` (mode 0600: the sidecar refuses one others can read) for `agent`.
    fn write_config(hub: &EmbeddedHub, dir: &Path, agent: &str, extra: Value) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let mut config = json!({ "agent_id": agent, "token": hub.add_token(agent), "hub_url": hub.url() });
        if let Value::Object(extra) = extra {
            for (k, v) in extra {
                config[k] = v;
            }
        }
        let path = dir.join("config.json");
        std::fs::write(&path, config.to_string()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// The real binary on `config`, its environment scrubbed of tokens and proxies (they would
    /// override the config), killed by the kernel if the bench's main thread dies.
    fn spawn(config: &Path) -> Child {
        let mut command = support::binary();
        command
            .args(["run", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        command.spawn().unwrap()
    }

    fn raise_nofile() -> u64 {
        // SAFETY: plain libc calls on a local struct.
        unsafe {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_cur
        }
    }

    /// Resident set size in bytes, from /proc/PID/status.
    fn rss_bytes(pid: u32) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024.0)
    }

    /// utime+stime of a process (all its threads) in clock ticks, from /proc/PID/stat.
    fn cpu_ticks(pid: u32) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after_comm = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    }

    fn tick_secs() -> f64 {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        1.0 / if hz > 0 { hz as f64 } else { 100.0 }
    }

    /// Time on CPU of all threads of a process in seconds (ns resolution), from schedstat.
    fn run_secs(pid: u32) -> Option<f64> {
        let mut ns = 0u64;
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
            let text = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
        }
        Some(ns as f64 / 1e9)
    }

    /// Nearest-rank percentile of unsorted samples.
    fn pct(samples: &[f64], p: f64) -> f64 {
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        if s.is_empty() {
            return f64::NAN;
        }
        let rank = (p * s.len() as f64).ceil() as usize;
        s[rank.clamp(1, s.len()) - 1]
    }

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }

    /// One row of the table and of the JSON.
    struct Figure {
        key: &'static str,
        label: String,
        unit: &'static str,
        samples: usize,
        median: f64,
        p99: f64,
        target: Option<String>,
        met: Option<bool>,
        note: String,
    }

    impl Figure {
        fn of(key: &'static str, label: impl Into<String>, unit: &'static str, samples: &[f64]) -> Figure {
            Figure {
                key,
                label: label.into(),
                unit,
                samples: samples.len(),
                median: pct(samples, 0.5),
                p99: pct(samples, 0.99),
                target: None,
                met: None,
                note: String::new(),
            }
        }

        fn target(mut self, text: impl Into<String>, met: bool) -> Figure {
            self.target = Some(text.into());
            self.met = Some(met);
            self
        }

        fn note(mut self, text: impl Into<String>) -> Figure {
            self.note = text.into();
            self
        }

        fn json(&self) -> Value {
            json!({
                "key": self.key, "label": self.label, "unit": self.unit, "samples": self.samples,
                "median": self.median, "p99": self.p99, "target": self.target, "met": self.met,
                "note": self.note,
            })
        }

        fn row(&self) -> String {
            let verdict = match self.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "",
            };
            let mut row = format!(
                "{:<44} {:>10.3} {:>10.3} {:<6} {:>5}  {:<28} {}",
                self.label,
                self.median,
                self.p99,
                self.unit,
                self.samples,
                self.target.as_deref().unwrap_or(""),
                verdict
            );
            if !self.note.is_empty() {
                row.push_str(&format!("\n{:<44} {}", "", self.note));
            }
            row
        }
    }

    /// The next Sent (`<type`) or Received (`>type`) frame of `what` mentioning `id`.
    async fn next_frame(events: &mut Receiver<HubEvent>, what: &str, id: &str) -> Instant {
        let (dir, ty) = what.split_at(1);
        let ty = format!("\"type\":\"{ty}\"");
        loop {
            match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
                Ok(Ok(HubEvent::Received { text, at, .. }))
                    if dir == ">" && text.contains(&ty) && text.contains(id) =>
                {
                    return at
                }
                Ok(Ok(HubEvent::Sent { text, at, .. }))
                    if dir == "<" && text.contains(&ty) && text.contains(id) =>
                {
                    return at
                }
                Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
                Ok(Err(RecvError::Closed)) => panic!("hub gone while waiting for {what} {id}"),
                Err(_) => panic!("no {what} for {id} within 30 s"),
            }
        }
    }

    /// The first `Identified` of `agent` after `since`.
    async fn identified_after(events: &mut Receiver<HubEvent>, agent: &str, since: Instant) -> Instant {
        loop {
            match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
                Ok(Ok(HubEvent::Identified { agent_id, at, .. })) if agent_id == agent && at >= since => {
                    return at
                }
                Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
                Ok(Err(RecvError::Closed)) => panic!("hub gone while waiting for {agent}"),
                Err(_) => panic!("{agent} did not identify within 30 s"),
            }
        }
    }

    /// Polls the history until `n` distinct agents have identified since `since`; the last one's time.
    async fn all_identified(
        hub: &EmbeddedHub,
        n: usize,
        since: Instant,
        within: Duration,
    ) -> Option<Instant> {
        let deadline = Instant::now() + within;
        loop {
            let mut seen = HashSet::new();
            let mut last = since;
            for event in hub.history() {
                if let HubEvent::Identified { agent_id, at, .. } = event {
                    if at >= since && seen.insert(agent_id) {
                        last = last.max(at);
                    }
                }
            }
            if seen.len() >= n {
                return Some(last);
            }
            if Instant::now() >= deadline {
                eprintln!("  only {} of {n} identified within {within:?}", seen.len());
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The most `Connected` events after `since` in any window of `window`.
    fn busiest_window(hub: &EmbeddedHub, since: Instant, window: Duration) -> (usize, usize) {
        let mut times: Vec<Instant> = hub
            .history()
            .into_iter()
            .filter_map(|e| match e {
                HubEvent::Connected { at, .. } if at >= since => Some(at),
                _ => None,
            })
            .collect();
        times.sort();
        let mut best = 0;
        let mut j = 0;
        for i in 0..times.len() {
            while j < times.len() && times[j] < times[i] + window {
                j += 1;
            }
            best = best.max(j - i);
        }
        (best, times.len())
    }

    struct Idle {
        spawn_ms: Vec<f64>,
        rss_mib: Vec<f64>,
        cpu_s_per_h: Vec<f64>,
        ticks_total: u64,
        idle_secs: f64,
    }

    async fn idle(root: &Path, runs: usize, idle_secs: u64) -> Idle {
        let hub = EmbeddedHub::start(HubOptions::default()).await.unwrap();
        let mut procs = Procs::default();
        let mut spawn_ms = vec![];
        for i in 0..runs {
            let agent = format!("idle-{i}");
            let config = write_config(&hub, &root.join(&agent), &agent, json!({}));
            let mut events = hub.events();
            let start = Instant::now();
            procs.0.push(spawn(&config));
            let at = identified_after(&mut events, &agent, start).await;
            spawn_ms.push(ms(at - start));
        }
        // Let the last one settle after identify before reading memory.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pids = procs.pids();
        let rss_mib = pids
            .iter()
            .filter_map(|&p| rss_bytes(p))
            .map(|b| b / MIB)
            .collect();
        let ticks0: Vec<_> = pids.iter().map(|&p| cpu_ticks(p).unwrap_or(0)).collect();
        let run0: Vec<_> = pids.iter().map(|&p| run_secs(p).unwrap_or(0.0)).collect();
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(idle_secs)).await;
        let elapsed = t0.elapsed().as_secs_f64();
        let ticks_total = pids
            .iter()
            .zip(&ticks0)
            .map(|(&p, t)| cpu_ticks(p).unwrap_or(0).saturating_sub(*t))
            .sum();
        let cpu_s_per_h = pids
            .iter()
            .zip(&run0)
            .map(|(&p, r)| (run_secs(p).unwrap_or(0.0) - r) * 3600.0 / elapsed)
            .collect();
        procs.kill_all();
        hub.stop().await;
        Idle {
            spawn_ms,
            rss_mib,
            cpu_s_per_h,
            ticks_total,
            idle_secs: elapsed,
        }
    }

    async fn task_path(root: &Path, n: usize) -> (Vec<f64>, Vec<f64>) {
        let hub = EmbeddedHub::start(HubOptions::default()).await.unwrap();
        hub.set_rate_limits(false);
        let dir = root.join("latency");
        let config = write_config(
            &hub,
            &dir,
            "latency",
            json!({ "wake_command": ": > \"$AGENTCOM_STARTED_FILE\"" }),
        );
        let mut events = hub.events();
        let start = Instant::now();
        let mut procs = Procs(vec![spawn(&config)]);
        identified_after(&mut events, "latency", start).await;
        let results = dir.join("results");
        let (mut accept, mut complete) = (vec![], vec![]);
        for _ in 0..n {
            let id = hub.submit_task(TaskSpec {
                description: "bench".into(),
                ..TaskSpec::default()
            });
            let assigned = next_frame(&mut events, "<task_assign", &id).await;
            let accepted = next_frame(&mut events, ">task_accepted", &id).await;
            accept.push(ms(accepted - assigned));
            let started = results.join(format!("{id}.started"));
            while !started.exists() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let tmp = results.join(format!("{id}.json.tmp"));
            std::fs::write(&tmp, r#"{"status":"success","output":"ok"}"#).unwrap();
            let renamed = Instant::now();
            std::fs::rename(&tmp, results.join(format!("{id}.json"))).unwrap();
            let completed = next_frame(&mut events, ">task_complete", &id).await;
            complete.push(ms(completed - renamed));
            next_frame(&mut events, "<task_ack", &id).await;
        }
        procs.kill_all();
        hub.stop().await;
        (accept, complete)
    }

    /// Hub restart -> identified again, `n` times, for one sidecar with `extra` config.
    async fn restarts(root: &Path, label: &str, n: usize, extra: Value) -> Vec<f64> {
        let hub = EmbeddedHub::start(HubOptions::default()).await.unwrap();
        let config = write_config(&hub, &root.join(label), label, extra);
        let mut events = hub.events();
        let start = Instant::now();
        let _procs = Procs(vec![spawn(&config)]);
        identified_after(&mut events, label, start).await;
        let mut times = vec![];
        for _ in 0..n {
            let t0 = Instant::now();
            hub.restart().await.unwrap();
            let at = identified_after(&mut events, label, t0).await;
            times.push(ms(at - t0));
        }
        hub.stop().await;
        times
    }

    struct Throughput {
        tasks: usize,
        per_sec: f64,
        cpu_ms_per_task: f64,
        run_ms_per_task: f64,
        agent_cpu_ms_per_task: f64,
    }

    /// `n` tasks through one sidecar. `agent_writes`: the wake command is the whole agent (touches
    /// `.started`, writes and renames the result); else it only touches `.started` and the bench
    /// writes each result once `.started` is there. The hub is kept a few tasks ahead.
    async fn throughput(root: &Path, n: usize, agent_writes: bool, ahead: usize) -> Throughput {
        let hub = EmbeddedHub::start(HubOptions::default()).await.unwrap();
        hub.set_rate_limits(false);
        let wake = if agent_writes {
            ": > \"$AGENTCOM_STARTED_FILE\" && printf '{\"status\":\"success\"}' > \"$AGENTCOM_RESULT_FILE.tmp\" && mv \"$AGENTCOM_RESULT_FILE.tmp\" \"$AGENTCOM_RESULT_FILE\""
        } else {
            ": > \"$AGENTCOM_STARTED_FILE\""
        };
        let label = if agent_writes {
            "agent-writes"
        } else {
            "bench-writes"
        };
        let dir = root.join(label);
        let config = write_config(&hub, &dir, label, json!({ "wake_command": wake }));
        let results = dir.join("results");
        let mut events = hub.events();
        let start = Instant::now();
        let procs = Procs(vec![spawn(&config)]);
        let pid = procs.0[0].id();
        identified_after(&mut events, label, start).await;
        drop(events);
        let children_ticks = |pid: u32| -> u64 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after = stat.rfind(')').map(|i| &stat[i + 2..]).unwrap_or("");
            let f: Vec<&str> = after.split_whitespace().collect();
            let field = |i: usize| f.get(i).and_then(|v| v.parse().ok()).unwrap_or(0u64);
            field(13) + field(14)
        };
        let (ticks0, run0, child0) = (
            cpu_ticks(pid).unwrap(),
            run_secs(pid).unwrap(),
            children_ticks(pid),
        );
        let t0 = Instant::now();
        let mut ids: Vec<String> = vec![];
        let completed = |id: &str| hub.task(id).is_some_and(|t| t.status == "completed");
        for i in 0..n {
            if ahead == 0 && i > 0 {
                // One at a time: the next task is submitted once the hub has the previous result.
                let deadline = Instant::now() + Duration::from_secs(30);
                while !completed(&ids[i - 1]) {
                    assert!(
                        Instant::now() < deadline,
                        "task {i} of {n} not completed within 30 s"
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            while ids.len() < n && ids.len() < i + ahead.max(1) {
                ids.push(hub.submit_task(TaskSpec {
                    description: "throughput".into(),
                    ..TaskSpec::default()
                }));
            }
            let id = &ids[i];
            let deadline = Instant::now() + Duration::from_secs(30);
            if agent_writes {
                while !completed(id) {
                    assert!(
                        Instant::now() < deadline,
                        "task {i} of {n} not completed within 30 s"
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            } else {
                let started = results.join(format!("{id}.started"));
                while !started.exists() {
                    assert!(
                        Instant::now() < deadline,
                        "task {i} of {n} not started within 30 s"
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let tmp = results.join(format!("{id}.json.tmp"));
                std::fs::write(&tmp, r#"{"status":"success","output":"ok"}"#).unwrap();
                std::fs::rename(&tmp, results.join(format!("{id}.json"))).unwrap();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !completed(&ids[n - 1]) {
            assert!(
                Instant::now() < deadline,
                "the last task did not complete within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let secs = t0.elapsed().as_secs_f64();
        let ticks = cpu_ticks(pid).unwrap() - ticks0;
        let run = run_secs(pid).unwrap() - run0;
        let child = children_ticks(pid) - child0;
        drop(procs);
        hub.stop().await;
        Throughput {
            tasks: n,
            per_sec: n as f64 / secs,
            cpu_ms_per_task: ticks as f64 * tick_secs() * 1000.0 / n as f64,
            run_ms_per_task: run * 1000.0 / n as f64,
            agent_cpu_ms_per_task: child as f64 * tick_secs() * 1000.0 / n as f64,
        }
    }

    struct FleetRun {
        spawn_ms: f64,
        identified_ms: f64,
        rss_total_mib: f64,
        busiest: usize,
        reconnects: usize,
        reidentified_ms: f64,
    }

    async fn fleet(root: &Path, run: usize, size: usize, jitter: f64) -> FleetRun {
        let hub = EmbeddedHub::start(HubOptions::default()).await.unwrap();
        let configs: Vec<PathBuf> = (0..size)
            .map(|i| {
                let agent = format!("fleet{run}-{i}");
                write_config(
                    &hub,
                    &root.join(format!("fleet{run}")).join(&agent),
                    &agent,
                    json!({ "reconnect_jitter": jitter }),
                )
            })
            .collect();
        let mut procs = Procs::default();
        let t0 = Instant::now();
        for batch in configs.chunks(50) {
            for config in batch {
                procs.0.push(spawn(config));
            }
            tokio::task::yield_now().await;
        }
        let spawn_ms = ms(t0.elapsed());
        let all = all_identified(&hub, size, t0, Duration::from_secs(60)).await;
        let identified_ms = all.map_or(f64::NAN, |at| ms(at - t0));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_total_mib = procs.pids().iter().filter_map(|&p| rss_bytes(p)).sum::<f64>() / MIB;
        let r0 = Instant::now();
        hub.restart().await.unwrap();
        let again = all_identified(&hub, size, r0, Duration::from_secs(60)).await;
        let reidentified_ms = again.map_or(f64::NAN, |at| ms(at - r0));
        let (busiest, reconnects) = busiest_window(&hub, r0, Duration::from_millis(100));
        procs.kill_all();
        hub.stop().await;
        FleetRun {
            spawn_ms,
            identified_ms,
            rss_total_mib,
            busiest,
            reconnects,
            reidentified_ms,
        }
    }

    struct FleetTasks {
        identified: usize,
        identified_ms: f64,
        completed: usize,
        completed_ms: f64,
        polling: usize,
    }

    /// `size` sidecars at once, each with a capability of its own, then one task for each (routed
    /// by that capability): how many identify, how many complete their task, and how many of them
    /// had no inotify instance left and polled their results folder instead.
    async fn fleet_tasks(root: &Path, size: usize) -> FleetTasks {
        let hub = EmbeddedHub::start(HubOptions::default()).await.unwrap();
        let wake = ": > \"$AGENTCOM_STARTED_FILE\" && printf '{\"status\":\"success\"}' > \"$AGENTCOM_RESULT_FILE.tmp\" && mv \"$AGENTCOM_RESULT_FILE.tmp\" \"$AGENTCOM_RESULT_FILE\"";
        let dirs: Vec<PathBuf> = (0..size)
            .map(|i| root.join("fleet-tasks").join(format!("ft-{i}")))
            .collect();
        let configs: Vec<PathBuf> = dirs
            .iter()
            .enumerate()
            .map(|(i, dir)| {
                let agent = format!("ft-{i}");
                write_config(
                    &hub,
                    dir,
                    &agent,
                    json!({ "capabilities": [agent.clone()], "wake_command": wake }),
                )
            })
            .collect();
        let mut procs = Procs::default();
        let t0 = Instant::now();
        for batch in configs.chunks(50) {
            for config in batch {
                procs.0.push(spawn(config));
            }
            tokio::task::yield_now().await;
        }
        let all = all_identified(&hub, size, t0, Duration::from_secs(60)).await;
        let identified = hub
            .history()
            .iter()
            .filter_map(|e| match e {
                HubEvent::Identified { agent_id, .. } => Some(agent_id.clone()),
                _ => None,
            })
            .collect::<HashSet<_>>()
            .len();
        let t1 = Instant::now();
        let ids: Vec<String> = (0..size)
            .map(|i| {
                hub.submit_task(TaskSpec {
                    description: format!("fleet task {i}"),
                    needed_capabilities: vec![format!("ft-{i}")],
                    ..TaskSpec::default()
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(120);
        let completed = loop {
            let done = ids
                .iter()
                .filter(|id| hub.task(id).is_some_and(|t| t.status == "completed"))
                .count();
            if done == size || Instant::now() >= deadline {
                break done;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let completed_ms = if completed == size {
            ms(t1.elapsed())
        } else {
            f64::NAN
        };
        let polling = dirs
            .iter()
            .filter(|d| {
                std::fs::read_to_string(d.join("sidecar.log"))
                    .is_ok_and(|l| l.contains("\"event\":\"results_polling\""))
            })
            .count();
        procs.kill_all();
        hub.stop().await;
        FleetTasks {
            identified,
            identified_ms: all.map_or(f64::NAN, |at| ms(at - t0)),
            completed,
            completed_ms,
            polling,
        }
    }

    struct Stream {
        tokens: usize,
        secs: f64,
        progress_frames: usize,
        cpu_ticks: u64,
        run_secs: f64,
        peak_rss_mib: f64,
        stream_rss_mib: f64,
        hwm_mib: f64,
        first_progress_ms: f64,
        short_first_ms: Vec<f64>,
        limited: usize,
        status: String,
    }

    /// VmHWM (the peak resident set over the process's life) in bytes, from /proc/PID/status.
    fn hwm_bytes(pid: u32) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024.0)
    }

    /// One standard task routed to a fake Ollama that streams `tokens` tokens, `delay` apart,
    /// executed by the sidecar itself (`direct_execution` auto) with the hub's rate limits on;
    /// then `shorts` tasks of 20 tokens one after another with the limits off (they would hold the
    /// frames back: each task takes 3 or more "normal" messages), for the spread of first token ->
    /// first `task_progress`.
    async fn stream(root: &Path, tokens: usize, delay: Duration, shorts: usize) -> Stream {
        use agentcom_sidecar::exec::fake_ollama::{Chat, FakeOllama};
        let hub = EmbeddedHub::start(HubOptions::default()).await.unwrap();
        let fake = FakeOllama::start().await.unwrap();
        fake.set_default_chat(Chat::Answer {
            tokens: (0..tokens).map(|i| format!("tok-{i:08} ")).collect(),
            delay,
            prompt_eval_count: 7,
            eval_count: tokens as u64,
        });
        let port = fake
            .host_port()
            .rsplit(':')
            .next()
            .unwrap()
            .parse::<u16>()
            .unwrap();
        hub.register_llm_endpoint(&json!({"host": "127.0.0.1", "port": port}))
            .unwrap();
        hub.probe_llm_now().await;
        let dir = root.join("stream");
        let config = write_config(&hub, &dir, "stream", json!({ "direct_execution": "auto" }));
        let mut events = hub.events();
        let start = Instant::now();
        let procs = Procs(vec![spawn(&config)]);
        let pid = procs.0[0].id();
        identified_after(&mut events, "stream", start).await;
        let (ticks0, run0) = (cpu_ticks(pid).unwrap(), run_secs(pid).unwrap());
        let t0 = Instant::now();
        let id = hub.submit_task(TaskSpec {
            description: "Write a long story.".into(),
            complexity_tier: Some("standard".into()),
            ..TaskSpec::default()
        });
        let timeout = Duration::from_secs(60) + delay * 2 * tokens as u32;
        let deadline = Instant::now() + timeout;
        let mut sample = tokio::time::interval(Duration::from_millis(20));
        let (mut progress_frames, mut limited, mut peak_rss) = (0usize, 0usize, 0f64);
        // The peak of the samples taken up to 100 ms before the hub received task_complete: while
        // streaming, not while the result (up to 1 MiB of output) is built and sent.
        let mut stream_rss = f64::NAN;
        let mut samples: Vec<(Instant, f64)> = vec![];
        let mut first_progress: Option<Instant> = None;
        let status = loop {
            tokio::select! {
                _ = sample.tick() => {
                    let rss = rss_bytes(pid).unwrap_or(0.0);
                    peak_rss = peak_rss.max(rss);
                    samples.push((Instant::now(), rss));
                    assert!(Instant::now() < deadline, "the stream did not end within {timeout:?}");
                }
                event = events.recv() => match event {
                    Ok(HubEvent::Received { text, at, .. }) if text.contains(&id) => {
                        if text.contains("\"type\":\"task_progress\"") && text.contains("\"execution_event\"") {
                            progress_frames += 1;
                            first_progress.get_or_insert(at);
                        } else if text.contains("\"type\":\"task_complete\"") {
                            let before = at - Duration::from_millis(100);
                            stream_rss = samples.iter().filter(|(t, _)| *t < before).map(|(_, r)| *r).fold(0.0, f64::max);
                            break "completed".to_string();
                        } else if text.contains("\"type\":\"task_failed\"") {
                            break format!("failed: {text}");
                        }
                    }
                    Ok(HubEvent::Sent { text, .. })
                        if text.contains("\"type\":\"rate_limit") => limited += 1,
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => panic!("the bench lagged {n} hub events behind"),
                    Err(RecvError::Closed) => panic!("hub gone during the stream"),
                },
            }
        };
        let secs = t0.elapsed().as_secs_f64();
        let cpu_ticks = cpu_ticks(pid).unwrap() - ticks0;
        let run_secs = run_secs(pid).unwrap() - run0;
        peak_rss = peak_rss.max(rss_bytes(pid).unwrap_or(0.0));
        let hwm = hwm_bytes(pid).unwrap_or(f64::NAN);
        let first_token = fake.first_token_at();
        hub.set_rate_limits(false);
        let mut short_first_ms = vec![];
        for _ in 0..shorts {
            fake.push_chat(Chat::Answer {
                tokens: (0..20).map(|i| format!("t{i} ")).collect(),
                delay,
                prompt_eval_count: 7,
                eval_count: 20,
            });
            let id = hub.submit_task(TaskSpec {
                description: "Write a short story.".into(),
                complexity_tier: Some("standard".into()),
                ..TaskSpec::default()
            });
            let got = next_frame(&mut events, ">task_progress", &id).await;
            let sent = fake.first_token_at().expect("the fake streamed");
            short_first_ms.push(ms(got.into_std().saturating_duration_since(sent)));
            next_frame(&mut events, ">task_complete", &id).await;
            next_frame(&mut events, "<task_ack", &id).await;
        }
        // Both clocks are the monotonic clock of this process: the fake's std Instant, the hub's
        // tokio Instant (not paused here).
        let first_progress_ms = match (first_token, first_progress) {
            (Some(sent), Some(got)) => ms(got.into_std().saturating_duration_since(sent)),
            _ => f64::NAN,
        };
        drop(procs);
        hub.stop().await;
        Stream {
            tokens,
            secs,
            progress_frames,
            cpu_ticks,
            run_secs,
            peak_rss_mib: peak_rss / MIB,
            stream_rss_mib: stream_rss / MIB,
            hwm_mib: hwm / MIB,
            first_progress_ms,
            short_first_ms,
            limited,
            status,
        }
    }

    pub fn main() {
        let runs = scaled("BENCH_RUNS", 20, 3);
        let idle_secs = scaled("BENCH_IDLE_SECS", 60, 5) as u64;
        let tasks = scaled("BENCH_TASKS", 200, 10);
        let restarts_n = scaled("BENCH_RESTARTS", 20, 3);
        let through_n = scaled("BENCH_THROUGHPUT", 10_000, 50);
        let agent_n = scaled("BENCH_BENCH_TASKS", 30, 10);
        let ahead: usize = std::env::var("BENCH_AHEAD")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let only = std::env::var("BENCH_ONLY").unwrap_or_default();
        let run_section = |name: &str| only.is_empty() || only.split(',').any(|s| s == name);
        let fleet_size = scaled("BENCH_FLEET", 500, 10);
        let fleet_runs = std::env::var("BENCH_FLEET_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3usize);
        let nofile = raise_nofile();
        // Each sidecar holds one inotify instance (its results folder); the per-user default is 128.
        let inotify: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if inotify < fleet_size + 10 {
            eprintln!(
                "note: fs.inotify.max_user_instances is {inotify}: sidecars past it poll their results folder \
                 (results_polling) instead of watching it"
            );
        }
        let fleet_tasks_size = scaled("BENCH_FLEET_TASKS", 200, 10);
        let stream_tokens = scaled("BENCH_STREAM_TOKENS", 100_000, 100);
        let stream_delay_us = env_f64("BENCH_STREAM_DELAY_US", 1000.0) as u64;
        let stream_shorts = scaled("BENCH_STREAM_SHORTS", 50, 5);
        let root = TempDir::new("limits");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut figures: Vec<Figure> = vec![];
        let mut extra = serde_json::Map::new();
        rt.block_on(async {
            if run_section("idle") {
            eprintln!("idle: {runs} sidecars, {idle_secs} s idle...");
            let idle = idle(root.path(), runs, idle_secs).await;
            let rss_p99 = pct(&idle.rss_mib, 0.99);
            figures.push(
                Figure::of("idle_rss", "idle resident memory (VmRSS)", "MiB", &idle.rss_mib)
                    .target("< 6 MiB (p99)", rss_p99 < 6.0),
            );
            let cpu_med = pct(&idle.cpu_s_per_h, 0.5);
            let pooled = idle.ticks_total as f64 * tick_secs() * 3600.0 / (idle.idle_secs * runs as f64);
            figures.push(
                Figure::of("idle_cpu", "idle CPU (schedstat)", "s/h", &idle.cpu_s_per_h)
                    .target("< 0.1 s/h (p50)", cpu_med < 0.1)
                    .note(format!(
                        "utime+stime: {} ticks over {} sidecars x {:.0} s = {pooled:.3} s/h pooled (resolution {:.3} s/h)",
                        idle.ticks_total,
                        runs,
                        idle.idle_secs,
                        tick_secs() * 3600.0 / (idle.idle_secs * runs as f64)
                    )),
            );
            extra.insert("idle_cpu_ticks_total".into(), json!(idle.ticks_total));
            extra.insert("idle_cpu_pooled_s_per_h".into(), json!(pooled));
            extra.insert("idle_secs".into(), json!(idle.idle_secs));
            figures.push(Figure::of("spawn_identified", "spawn -> identified", "ms", &idle.spawn_ms));
            }

            if run_section("tasks") {
            eprintln!("task path: {tasks} tasks...");
            let (accept, complete) = task_path(root.path(), tasks).await;
            let a50 = pct(&accept, 0.5);
            figures.push(
                Figure::of("accept", "task_assign -> task_accepted (fsync'd)", "ms", &accept)
                    .target("p50 < 5 ms", a50 < 5.0),
            );
            let (c50, c99) = (pct(&complete, 0.5), pct(&complete, 0.99));
            figures.push(
                Figure::of("complete", "result renamed -> task_complete", "ms", &complete)
                    .target("p50 < 5 ms, p99 < 50 ms", c50 < 5.0 && c99 < 50.0),
            );

            }
            if run_section("restarts") {
            eprintln!("hub restarts: {restarts_n} x 2...");
            let default = restarts(root.path(), "restart-default", restarts_n, json!({})).await;
            figures.push(Figure::of(
                "restart_identified",
                "hub restart -> identified (1000 ms, j 0.5)",
                "ms",
                &default,
            ));
            let fast = restarts(root.path(), "restart-fast", restarts_n, json!({ "reconnect_initial_ms": 100 })).await;
            figures.push(Figure::of(
                "restart_identified_100ms",
                "hub restart -> identified (100 ms, j 0.5)",
                "ms",
                &fast,
            ));

            }
            if run_section("throughput") {
            eprintln!("throughput: {through_n} tasks, the wake command writes results (ahead {ahead})...");
            let t = throughput(root.path(), through_n, true, ahead).await;
            figures.push(Figure::of(
                "throughput",
                format!("throughput ({} tasks, agent writes results)", t.tasks),
                "task/s",
                &[t.per_sec],
            ));
            figures.push(
                Figure::of("task_cpu", "sidecar CPU per task (utime+stime)", "ms", &[t.cpu_ms_per_task]).note(format!(
                    "schedstat {:.3} ms per task; the agent (shell, mv): {:.3} ms per task",
                    t.run_ms_per_task, t.agent_cpu_ms_per_task
                )),
            );
            extra.insert("task_run_ms_per_task".into(), json!(t.run_ms_per_task));
            eprintln!("throughput: {agent_n} tasks, the bench writes results...");
            let a = throughput(root.path(), agent_n, false, ahead).await;
            figures.push(
                Figure::of(
                    "throughput_agent",
                    format!("throughput ({} tasks, bench writes results)", a.tasks),
                    "task/s",
                    &[a.per_sec],
                )
                .note(format!(
                    "sidecar CPU {:.3} ms per task; the wake command's shell {:.3} ms per task",
                    a.cpu_ms_per_task, a.agent_cpu_ms_per_task
                )),
            );

            }
            if run_section("stream") {
            eprintln!("stream: one task, {stream_tokens} tokens {stream_delay_us} us apart, executed by the sidecar...");
            let s = stream(root.path(), stream_tokens, Duration::from_micros(stream_delay_us), stream_shorts).await;
            let ok = s.status == "completed";
            if !ok {
                eprintln!("  the task did not complete: {}", s.status);
            }
            let cpu_s = s.cpu_ticks as f64 * tick_secs();
            figures.push(
                Figure::of("stream_cpu_per_token", "stream: sidecar CPU per token (schedstat)", "us", &[s.run_secs * 1e6 / s.tokens as f64])
                    .note(format!(
                        "{} tokens in {:.1} s ({:.0} tok/s); utime+stime {:.2} s = {:.2} us per token; task {}",
                        s.tokens, s.secs, s.tokens as f64 / s.secs, cpu_s, cpu_s * 1e6 / s.tokens as f64, s.status
                    )),
            );
            figures.push(
                Figure::of(
                    "stream_cpu_per_frame",
                    "stream: sidecar CPU per task_progress (sched)",
                    "ms",
                    &[s.run_secs * 1e3 / s.progress_frames.max(1) as f64],
                )
                .note(format!("{} task_progress frames with an execution_event received by the hub", s.progress_frames)),
            );
            figures.push(
                Figure::of("stream_rss", "stream: peak VmRSS while streaming", "MiB", &[s.stream_rss_mib])
                    .target("< 10 MiB", s.stream_rss_mib < 10.0)
                    .note("VmRSS sampled every 20 ms, up to 100 ms before the hub received task_complete"),
            );
            figures.push(
                Figure::of("stream_hwm", "stream: VmHWM after the outcome", "MiB", &[s.hwm_mib]).note(format!(
                    "the peak over the whole run, including building and sending the result (output cut at 1 MiB); VmRSS at the end {:.3} MiB",
                    s.peak_rss_mib
                )),
            );
            figures.push(
                Figure::of("stream_first_progress", "stream: first token -> first task_progress", "ms", &[s.first_progress_ms])
                    .target("< 150 ms", s.first_progress_ms < 150.0),
            );
            let short_p99 = pct(&s.short_first_ms, 0.99);
            figures.push(
                Figure::of("stream_first_progress_short", "20-token tasks: first token -> task_progress", "ms", &s.short_first_ms)
                    .target("< 150 ms (p99)", short_p99 < 150.0)
                    .note("one after another through the same sidecar, the hub's rate limits off"),
            );
            figures.push(
                Figure::of("stream_rate_limited", "stream: rate-limit frames from the hub", "frames", &[s.limited as f64])
                    .target("0 (rate limits on)", s.limited == 0 && ok),
            );
            extra.insert("stream_tokens".into(), json!(s.tokens));
            extra.insert("stream_delay_us".into(), json!(stream_delay_us));
            extra.insert("stream_secs".into(), json!(s.secs));
            extra.insert("stream_progress_frames".into(), json!(s.progress_frames));
            extra.insert("stream_cpu_ticks".into(), json!(s.cpu_ticks));
            extra.insert("stream_status".into(), json!(s.status));
            }
            if run_section("fleet_tasks") {
                eprintln!("fleet: {fleet_tasks_size} sidecars, one task each (inotify instances: {inotify})...");
                let ft = fleet_tasks(root.path(), fleet_tasks_size).await;
                let all = ft.identified == fleet_tasks_size && ft.completed == fleet_tasks_size;
                figures.push(
                    Figure::of(
                        "fleet_tasks",
                        format!("{fleet_tasks_size} sidecars: each completed a task"),
                        "ms",
                        &[ft.completed_ms],
                    )
                    .target("all identify and complete", all)
                    .note(format!(
                        "{} identified (all after {:.0} ms), {} completed; {} polled results_dir \
                         (fs.inotify.max_user_instances {inotify})",
                        ft.identified, ft.identified_ms, ft.completed, ft.polling
                    )),
                );
                extra.insert("fleet_tasks_identified".into(), json!(ft.identified));
                extra.insert("fleet_tasks_completed".into(), json!(ft.completed));
                extra.insert("fleet_tasks_polling".into(), json!(ft.polling));
            }
            let mut run = 0;
            for jitter in [0.5, 1.0].into_iter().filter(|_| run_section("fleet")) {
                let mut fr = vec![];
                for _ in 0..fleet_runs {
                    eprintln!("fleet: {fleet_size} sidecars, jitter {jitter}, run {}...", run + 1);
                    fr.push(fleet(root.path(), run, fleet_size, jitter).await);
                    run += 1;
                }
                let col = |f: fn(&FleetRun) -> f64| fr.iter().map(f).collect::<Vec<f64>>();
                let ident = col(|r| r.identified_ms);
                let spawn = col(|r| r.spawn_ms);
                let rss = col(|r| r.rss_total_mib);
                let busiest = col(|r| r.busiest as f64);
                let reconnects = col(|r| r.reconnects as f64);
                let again = col(|r| r.reidentified_ms);
                let quarter = fleet_size as f64 / 4.0;
                if jitter == 0.5 {
                    let worst = pct(&ident, 1.0);
                    figures.push(
                        Figure::of("fleet_identified", format!("{fleet_size} sidecars: all identified"), "ms", &ident)
                            .target("< 5000 ms (every run)", worst < 5000.0)
                            .note(format!(
                                "from the first spawn; spawning took {:.0} ms (median)",
                                pct(&spawn, 0.5)
                            )),
                    );
                    figures.push(Figure::of(
                        "fleet_rss",
                        format!("{fleet_size} sidecars: total VmRSS"),
                        "MiB",
                        &rss,
                    ));
                }
                let key = if jitter == 0.5 { "fleet_restart_window" } else { "fleet_restart_window_j1" };
                let mut fig = Figure::of(
                    key,
                    format!("restart: most connects in 100 ms (j {jitter})"),
                    "conns",
                    &busiest,
                )
                .note(format!(
                    "{:.0}% of the fleet (p99); {} connects seen (median); all identified again after {:.0} ms (median), {:.0} ms (p99)",
                    pct(&busiest, 0.99) * 100.0 / fleet_size as f64,
                    pct(&reconnects, 0.5),
                    pct(&again, 0.5),
                    pct(&again, 0.99)
                ));
                if jitter == 0.5 {
                    fig = fig.target(format!("<= {quarter:.0} (a quarter, p99)"), pct(&busiest, 0.99) <= quarter);
                }
                figures.push(fig);
                let key = if jitter == 0.5 { "fleet_reidentified" } else { "fleet_reidentified_j1" };
                figures.push(Figure::of(
                    key,
                    format!("restart: all identified again (j {jitter})"),
                    "ms",
                    &again,
                ));
            }
        });

        println!(
            "agentcom-sidecar limits (release build, embedded hub on 127.0.0.1, {} cores; open files {nofile})",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!(
            "{:<44} {:>10} {:>10} {:<6} {:>5}  {:<28} verdict",
            "figure", "median", "p99", "unit", "n", "target"
        );
        for f in &figures {
            println!("{}", f.row());
        }
        let path = std::env::var_os("BENCH_JSON")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::var_os("CARGO_TARGET_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
                    .join("bench-figures.json")
            });
        let report = json!({
            "command": "cargo bench --bench limits",
            "scale": env_f64("BENCH_SCALE", 1.0),
            "counts": {
                "idle_sidecars": runs, "tasks": tasks, "restarts": restarts_n, "throughput_tasks": through_n, "bench_written_tasks": agent_n, "tasks_ahead": ahead,
                "fleet": fleet_size, "fleet_runs_per_jitter": fleet_runs, "fleet_tasks": fleet_tasks_size,
                "stream_tokens": stream_tokens, "stream_delay_us": stream_delay_us, "stream_short_tasks": stream_shorts,
                "open_files_limit": nofile, "inotify_max_user_instances": inotify,
            },
            "percentiles": "nearest rank; p99 of fewer than 100 samples is the maximum",
            "figures": figures.iter().map(Figure::json).collect::<Vec<_>>(),
            "extra": extra,
        });
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
        println!("figures written to {}", path.display());
    }
}

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the limits benchmark reads /proc: Linux only");
}
