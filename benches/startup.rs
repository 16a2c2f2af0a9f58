//! Figures for the README: time from spawn to `identified`, resident memory once identified, and
//! CPU time while idle. A benchmark, not a test: it prints numbers and asserts nothing.
//!
//! Run: `cargo bench --bench startup` (BENCH_RUNS=20, BENCH_IDLE_SECS=60 by default). Linux only
//! for the memory and CPU figures (read from /proc).

use agentcom_sidecar::hub::{EmbeddedHub, HubEvent, HubOptions};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident set size in KiB, from /proc/PID/status.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU time of a process, from /proc/PID/stat.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let hz: u64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100);
    Some(Duration::from_millis(ticks * 1000 / hz))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

struct Run {
    child: std::process::Child,
    to_identified: Duration,
}

async fn spawn_identified(hub: &EmbeddedHub, dir: &std::path::Path, agent: &str) -> Run {
    let token = hub.add_token(agent);
    let config = serde_json::json!({
        "agent_id": agent, "token": token, "hub_url": hub.url(),
        "log_file": dir.join(format!("{agent}.log")),
    });
    let path = dir.join(format!("{agent}.json"));
    write_private(&path, &config.to_string());
    let mut events = hub.events();
    let start = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_agentcom-sidecar"))
        .env_remove("AGENTCOM_TOKEN")
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Ok(HubEvent::Identified { agent_id, at, .. })) if agent_id == agent => {
                return Run {
                    child,
                    to_identified: at - start,
                };
            }
            Ok(_) => {}
            Err(_) => panic!("{agent} did not identify within 10 s"),
        }
    }
}

fn main() {
    let runs = env_or("BENCH_RUNS", 20);
    let idle_secs = env_or("BENCH_IDLE_SECS", 60);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let hub = EmbeddedHub::start(HubOptions::default()).await.unwrap();
        let dir = std::env::temp_dir().join(format!("agentcom-sidecar-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut times = vec![];
        let mut rss = vec![];
        for i in 0..runs {
            let mut run = spawn_identified(&hub, &dir, &format!("bench-{i}")).await;
            // Let the process settle after identify before reading its memory.
            tokio::time::sleep(Duration::from_millis(200)).await;
            times.push(run.to_identified.as_secs_f64() * 1000.0);
            if let Some(kib) = rss_kib(run.child.id()) {
                rss.push(kib as f64 / 1024.0);
            }
            let _ = run.child.kill();
            let _ = run.child.wait();
        }
        times.sort_by(f64::total_cmp);
        rss.sort_by(f64::total_cmp);
        println!("agentcom-sidecar startup benchmark ({runs} runs, embedded hub on loopback)");
        println!("  spawn -> identified     median {:6.2} ms   p90 {:6.2} ms   max {:6.2} ms   (target < 20 ms)",
            percentile(&times, 0.5), percentile(&times, 0.9), percentile(&times, 1.0));
        if !rss.is_empty() {
            println!("  resident memory         median {:6.2} MiB  max {:6.2} MiB            (target < 8 MiB)",
                percentile(&rss, 0.5), percentile(&rss, 1.0));
        }
        let mut idle = spawn_identified(&hub, &dir, "bench-idle").await;
        let pid = idle.child.id();
        let before = cpu_time(pid);
        tokio::time::sleep(Duration::from_secs(idle_secs)).await;
        let after = cpu_time(pid);
        if let (Some(b), Some(a)) = (before, after) {
            let used = a - b;
            if used.is_zero() {
                println!("  CPU while idle          under one clock tick (10 ms) over {idle_secs} s (/proc resolution)");
            } else {
            println!(
                "  CPU while idle          {:6.3} s over {idle_secs} s  (= {:.3} s per hour; default heartbeat 30 s)",
                used.as_secs_f64(),
                used.as_secs_f64() * 3600.0 / idle_secs as f64
            );
            }
        }
        if let Some(kib) = rss_kib(pid) {
            println!("  resident after idling   {:6.2} MiB", kib as f64 / 1024.0);
        }
        let _ = idle.child.kill();
        let _ = idle.child.wait();
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
