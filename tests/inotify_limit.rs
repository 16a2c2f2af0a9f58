//! More sidecars than the user's inotify instances (Linux, 128 by default): a sidecar that
//! cannot have an inotify watch polls its results folder instead, says so once, and works.
//!
//! A test binary of its own: it uses up this user's inotify instances for a moment, which no
//! other test in the same process may notice.
#![cfg(target_os = "linux")]

mod support;

use agentcom_sidecar::hub::TaskSpec;
use serde_json::json;
use std::time::{Duration, Instant};
use support::*;

/// This user's inotify instances, all taken, and kept taken: a thread takes every instance
/// another program of this user gives back (a machine shared with other builds and tests frees
/// some all the time), so the sidecar cannot slip one in. Given back on drop.
struct Exhausted {
    fds: std::sync::Arc<std::sync::Mutex<Vec<i32>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    keeper: Option<std::thread::JoinHandle<()>>,
}

/// Opens inotify instances until the kernel refuses with EMFILE; false past `cap` of them.
fn take_all(fds: &mut Vec<i32>, cap: usize) -> bool {
    loop {
        // SAFETY: inotify_init1 takes flags only; the fd is closed on drop.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "inotify_init1: {e}");
            return true;
        }
        fds.push(fd);
        if fds.len() > cap {
            return false;
        }
    }
}

impl Exhausted {
    /// Takes every instance, then keeps taking those given back. `None` when the limit is too
    /// high to reach quickly (then this test cannot show anything).
    fn take() -> Option<Exhausted> {
        let mut fds = Vec::new();
        if !take_all(&mut fds, 10_000) {
            for fd in fds {
                // SAFETY: fds this function opened.
                unsafe { libc::close(fd) };
            }
            return None;
        }
        let fds = std::sync::Arc::new(std::sync::Mutex::new(fds));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let keeper = {
            let (fds, stop) = (fds.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    take_all(&mut fds.lock().unwrap(), usize::MAX);
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        };
        Some(Exhausted {
            fds,
            stop,
            keeper: Some(keeper),
        })
    }
}

impl Drop for Exhausted {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
        for fd in self.fds.lock().unwrap().drain(..) {
            // SAFETY: an fd this struct opened and owns.
            unsafe { libc::close(fd) };
        }
    }
}

const AGENT_SH: &str = r#"#!/bin/sh
: > "$AGENTCOM_STARTED_FILE"
sleep 0.2
printf '{"status":"success","output":"polled"}' > "$AGENTCOM_RESULT_FILE.tmp" && mv "$AGENTCOM_RESULT_FILE.tmp" "$AGENTCOM_RESULT_FILE"
"#;

#[tokio::test]
async fn without_inotify_the_results_folder_is_polled_and_tasks_complete() {
    let HubSetup {
        hub, mut events, dir, ..
    } = HubSetup::start("inotify-limit", json!({}))
        .await
        .with_agent(AGENT_SH, "sh AGENT &", json!({}));

    let Some(exhausted) = Exhausted::take() else {
        let why = "fs.inotify.max_user_instances is too high to use up in a test";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("SKIPPED: {why}");
        return;
    };
    let sidecar = Sidecar::spawn(dir.path(), &dir.join("config.json"));
    // Its watch failed on the limit: one warning naming the sysctl. Then the instances are
    // given back at once (other programs of this user need them), and it keeps polling.
    let polling = sidecar
        .wait_log_event("results_polling", Duration::from_secs(10))
        .await;
    drop(exhausted);
    let polling = polling.unwrap_or_else(|| {
        panic!(
            "no results_polling event; stderr:\n{}\nstdout:\n{}",
            sidecar.stderr(),
            sidecar.stdout()
        )
    });
    assert!(
        polling["help"]
            .as_str()
            .unwrap()
            .contains("sysctl fs.inotify.max_user_instances="),
        "{polling}"
    );
    assert!(
        sidecar.stdout().contains("checking it every second instead"),
        "{}",
        sidecar.stdout()
    );

    wait_hub(
        &mut events,
        Duration::from_secs(10),
        "identified",
        identified("inotify-limit"),
    )
    .await;
    let id = hub.submit_task(TaskSpec {
        description: "poll for me".into(),
        ..TaskSpec::default()
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let record = hub.task(&id);
        if let Some(r) = record.as_ref().filter(|r| r.status == "completed") {
            assert_eq!(
                r.result,
                Some(json!({"status":"success","output":"polled","verification_status":"verified"}))
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not completed: {record:?}\n{}",
            sidecar.stdout()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let warnings = sidecar
        .log_events()
        .iter()
        .filter(|e| e["event"] == "results_polling")
        .count();
    assert_eq!(warnings, 1, "said once");
}
