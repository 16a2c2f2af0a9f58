//! spawn_wake and kill_process_group against real `/bin/sh` processes: exit codes, output tails,
//! timeouts that kill the whole process group, backgrounded children that keep stdout open,
//! the environment, and values too big for one argument. Every wait polls with a deadline.
#![cfg(unix)]

mod support;

use agentcom_sidecar::exec::process::*;
use agentcom_sidecar::exec::template::*;
use agentcom_sidecar::exec::wake::*;
use std::path::Path;
use std::time::{Duration, Instant};
use support::TempDir;

fn spec(dir: &TempDir, command: &str, description: &str, timeout: Duration) -> WakeSpec {
    WakeSpec {
        command: command.to_string(),
        vars: WakeVars {
            task_id: "task-42".into(),
            description: description.into(),
            task_json: serde_json::json!({"task_id": "task-42", "description": description}).to_string(),
            task_file: dir.join("task-42.task.json"),
            results_dir: dir.join("results"),
            generation: 3,
            workspace: dir.join("workspace"),
        },
        env: vec![("AGENTCOM_AGENT_ID".into(), "agent-7".into())],
        cwd: Some(dir.path().to_owned()),
        timeout,
        output_file: dir.join("logs/deep/wake.log"),
    }
}

async fn run(spec: &WakeSpec) -> WakeOutcome {
    match spawn_wake(spec) {
        Ok(handle) => wait(handle).await,
        Err(outcome) => outcome,
    }
}

/// `handle.wait()`, failing the test rather than hanging it.
async fn wait(handle: WakeHandle) -> WakeOutcome {
    tokio::time::timeout(Duration::from_secs(30), handle.wait())
        .await
        .expect("wait hung")
}

/// Whether `pid` is a live process (a zombie is not: nothing may be reaping it here).
fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start().chars().next();
            state != Some('Z') && state != Some('X')
        }
        Err(_) => !Path::new("/proc/self").exists(),
    }
}

/// Poll `f` every 20 ms until it holds or `limit` passes.
async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pids written, one a line, to `file` once it has `n` of them.
async fn pids(file: &Path, n: usize) -> Vec<i32> {
    let mut got = Vec::new();
    let ok = eventually(Duration::from_secs(10), || {
        got = std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        got.len() >= n
    })
    .await;
    assert!(ok, "{} never held {n} pids", file.display());
    got
}

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn success_and_output_file_with_its_folder() {
    let dir = TempDir::new("ok");
    let s = spec(&dir, "echo to-stdout; echo to-stderr >&2", "d", MINUTE);
    assert_eq!(run(&s).await, WakeOutcome::Success);
    // Appended, not truncated.
    assert_eq!(run(&s).await, WakeOutcome::Success);
    let log = std::fs::read_to_string(&s.output_file).unwrap();
    assert_eq!(log, "to-stdout\nto-stderr\nto-stdout\nto-stderr\n");
}

#[tokio::test]
async fn non_zero_exit_reports_code_and_output_tail() {
    let dir = TempDir::new("fail");
    let s = spec(&dir, "echo first line; echo 'it broke' >&2; exit 3", "d", MINUTE);
    let WakeOutcome::Failed { error } = run(&s).await else {
        panic!("not Failed")
    };
    assert!(error.contains("exit code 3"), "{error}");
    assert!(
        error.contains("it broke") && error.contains("first line"),
        "{error}"
    );

    // A long output: only its tail, and the error stays within 2000 chars.
    let dir = TempDir::new("fail-long");
    let s = spec(
        &dir,
        "i=0; while [ $i -lt 400 ]; do printf 'é%04d ' $i; i=$((i+1)); done; echo THE-END; exit 4",
        "d",
        MINUTE,
    );
    let WakeOutcome::Failed { error } = run(&s).await else {
        panic!("not Failed")
    };
    assert!(error.starts_with("exit code 4"), "{error}");
    assert!(
        error.contains("THE-END") && error.contains("0399") && !error.contains("é0001"),
        "{error}"
    );
    assert!(error.chars().count() <= 2000);
    assert!(error.len() < 700, "{} bytes", error.len());
}

#[tokio::test]
async fn command_not_found_is_exit_127() {
    let dir = TempDir::new("nf");
    let s = spec(&dir, "agentcom-no-such-command-xyz --flag", "d", MINUTE);
    let WakeOutcome::Failed { error } = run(&s).await else {
        panic!("not Failed")
    };
    assert!(error.contains("exit code 127"), "{error}");
    assert!(error.contains("agentcom-no-such-command-xyz"), "{error}");
}

#[tokio::test]
async fn could_not_start() {
    let dir = TempDir::new("cns");
    let mut s = spec(&dir, "true", "d", MINUTE);
    s.cwd = Some(dir.join("no/such/dir"));
    assert!(matches!(run(&s).await, WakeOutcome::CouldNotStart { .. }));

    let mut s = spec(&dir, "true", "d", MINUTE);
    std::fs::write(dir.join("plain-file"), "x").unwrap();
    s.output_file = dir.join("plain-file/wake.log");
    let WakeOutcome::CouldNotStart { error } = run(&s).await else {
        panic!("not CouldNotStart")
    };
    assert!(error.contains("output file"), "{error}");
}

#[tokio::test]
async fn timeout_kills_the_whole_group() {
    let dir = TempDir::new("timeout");
    let s = spec(
        &dir,
        "sleep 1000 & echo $! >> pids; (sleep 1000 & echo $! >> pids; wait) & sleep 1000",
        "d",
        Duration::from_millis(300),
    );
    let handle = spawn_wake(&s).unwrap();
    let shell = handle.pgid as i32;
    let started = Instant::now();
    assert_eq!(wait(handle).await, WakeOutcome::Timeout);
    assert!(started.elapsed() < Duration::from_secs(10));
    let children = pids(&dir.join("pids"), 2).await;
    for pid in children.into_iter().chain([shell]) {
        assert!(
            eventually(Duration::from_secs(10), || !alive(pid)).await,
            "{pid} survived"
        );
    }
}

#[tokio::test]
async fn timeout_sigkills_a_group_that_ignores_sigterm() {
    let dir = TempDir::new("timeout-term");
    let s = spec(
        &dir,
        "trap '' TERM; sleep 1000 & echo $! >> pids; sleep 1000 & echo $! >> pids; wait",
        "d",
        Duration::from_millis(300),
    );
    let handle = spawn_wake(&s).unwrap();
    let shell = handle.pgid as i32;
    let children = pids(&dir.join("pids"), 2).await;
    let started = Instant::now();
    assert_eq!(wait(handle).await, WakeOutcome::Timeout);
    assert!(started.elapsed() < Duration::from_secs(10));
    for pid in children.into_iter().chain([shell]) {
        assert!(
            eventually(Duration::from_secs(10), || !alive(pid)).await,
            "{pid} survived"
        );
    }
}

#[tokio::test]
async fn a_backgrounded_child_holding_stdout_does_not_hold_the_wake() {
    let dir = TempDir::new("bg");
    // The agent keeps the shell's stdout and stderr open and runs on.
    let s = spec(&dir, "sleep 1000 & echo $! > pid; echo started", "d", MINUTE);
    let handle = spawn_wake(&s).unwrap();
    let pgid = handle.pgid;
    let started = Instant::now();
    assert_eq!(wait(handle).await, WakeOutcome::Success);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let agent = pids(&dir.join("pid"), 1).await[0];
    assert!(alive(agent), "the woken agent must keep running");
    // The group outlives its leader; kill_process_group still reaches it.
    kill_process_group(pgid, Duration::from_secs(2)).await;
    assert!(eventually(Duration::from_secs(10), || !alive(agent)).await);
}

#[tokio::test]
async fn kill_process_group_stops_a_running_group() {
    let dir = TempDir::new("kill");
    let s = spec(
        &dir,
        "sleep 1000 & echo $! >> pids; sleep 1000 & echo $! >> pids; wait",
        "d",
        MINUTE,
    );
    let handle = spawn_wake(&s).unwrap();
    let pgid = handle.pgid;
    let children = pids(&dir.join("pids"), 2).await;
    let waiting = tokio::spawn(wait(handle));
    kill_process_group(pgid, Duration::from_secs(2)).await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap();
    let WakeOutcome::Failed { error } = outcome else {
        panic!("not Failed: {outcome:?}")
    };
    assert!(error.contains("signal 15"), "{error}");
    for pid in children.into_iter().chain([pgid as i32]) {
        assert!(
            eventually(Duration::from_secs(10), || !alive(pid)).await,
            "{pid} survived"
        );
    }
    // Gone already, and nonsense ids: no error, no effect.
    kill_process_group(pgid, Duration::from_millis(100)).await;
    kill_process_group(0, Duration::from_millis(100)).await;
    kill_process_group(1, Duration::from_millis(100)).await;
    kill_process_group(u32::MAX, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn environment_and_cwd() {
    let dir = TempDir::new("env");
    let s = spec(
        &dir,
        "printf '%s|%s|%s|%s|%s' \"$AGENTCOM_AGENT_ID\" \"$AGENTCOM_V_TASK_ID\" \"$AGENTCOM_V_TASK_DESCRIPTION\" \
         \"$AGENTCOM_V_GENERATION\" \"$(pwd -P)\" > out",
        "de$(touch pwned)scr\n",
        MINUTE,
    );
    assert_eq!(run(&s).await, WakeOutcome::Success);
    let cwd = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("out")).unwrap(),
        format!("agent-7|task-42|de$(touch pwned)scr\n|3|{}", cwd.display())
    );
    assert!(!dir.join("pwned").exists());
}

#[tokio::test]
async fn hostile_values_end_to_end() {
    for value in [
        "$(touch pwned)",
        "`touch pwned`",
        "'\"; touch pwned; \"'",
        "a\\",
        "x\n; touch pwned &",
        "% ! ^ & |",
    ] {
        let dir = TempDir::new("e2e");
        let s = spec(
            &dir,
            "printf %s ${TASK_DESCRIPTION} > bare; printf %s \"Task: ${TASK_JSON}\" > dq; printf %s '${TASK_DESCRIPTION}' > sq",
            value,
            MINUTE,
        );
        assert_eq!(run(&s).await, WakeOutcome::Success);
        assert_eq!(std::fs::read_to_string(dir.join("bare")).unwrap(), value);
        assert_eq!(
            std::fs::read_to_string(dir.join("dq")).unwrap(),
            format!("Task: {}", s.vars.task_json)
        );
        assert_eq!(std::fs::read_to_string(dir.join("sq")).unwrap(), value);
        assert!(!dir.join("pwned").exists(), "{value:?}");
    }
}

#[tokio::test]
async fn values_too_big_for_one_argument() {
    // 60 KB twice plus the JSON: too long inline, so the values go through the environment.
    let dir = TempDir::new("big");
    let big: String = "$(touch pwned)'\"`x`\\".repeat(3000);
    let s = spec(
        &dir,
        "printf %s ${TASK_DESCRIPTION} > a; printf %s \"${TASK_DESCRIPTION}\" > b; printf %s '${TASK_JSON}' > c",
        &big,
        MINUTE,
    );
    assert_eq!(run(&s).await, WakeOutcome::Success);
    assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), big);
    assert_eq!(std::fs::read_to_string(dir.join("b")).unwrap(), big);
    assert_eq!(std::fs::read_to_string(dir.join("c")).unwrap(), s.vars.task_json);
    assert!(!dir.join("pwned").exists());

    // Over 128 KiB: cannot be passed; fine when unused, a clear error when used.
    let huge = "y".repeat(200 * 1024);
    let s = spec(&dir, "printf %s \"$AGENTCOM_V_TASK_ID\" > id", &huge, MINUTE);
    assert_eq!(run(&s).await, WakeOutcome::Success);
    assert_eq!(std::fs::read_to_string(dir.join("id")).unwrap(), "task-42");
    let s = spec(&dir, "printf %s ${TASK_DESCRIPTION} > out", &huge, MINUTE);
    let WakeOutcome::CouldNotStart { error } = run(&s).await else {
        panic!("not CouldNotStart")
    };
    assert!(
        error.contains("TASK_DESCRIPTION") && error.contains("TASK_FILE"),
        "{error}"
    );
}

/// Issue 8, item 9: a group outlives the wake shell while a backgrounded member lives; it is
/// recognised by its leader's start time, never by the bare PID, and `stop_agent` empties it.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_backgrounded_group_is_recognised_and_stopped_after_the_shell_exits() {
    use agentcom_sidecar::relay::task::AgentGroup;
    let dir = TempDir::new("group");
    let s = spec(&dir, "sleep 30 & echo $! > pids", "d", MINUTE);
    let handle = spawn_wake(&s).unwrap();
    let group = handle.group();
    assert_eq!(group.pgid, handle.pgid);
    assert!(
        group.start_ticks.is_some() && group.boot_id.is_some(),
        "{group:?}"
    );
    assert_eq!(wait(handle).await, WakeOutcome::Success);
    let sleeper = pids(&dir.join("pids"), 1).await[0];
    assert!(alive(sleeper));
    assert!(group_alive(group.pgid), "the group outlives its shell");
    assert!(recorded_group_is_ours(&group));
    let other_start = AgentGroup {
        start_ticks: group.start_ticks.map(|t| t + 100_000),
        ..group.clone()
    };
    assert!(
        !recorded_group_is_ours(&other_start),
        "members started before the recorded leader"
    );
    let other_boot = AgentGroup {
        boot_id: Some("another-boot".into()),
        ..group.clone()
    };
    assert!(!recorded_group_is_ours(&other_boot));
    let no_start = AgentGroup {
        start_ticks: None,
        ..group.clone()
    };
    assert!(!recorded_group_is_ours(&no_start), "a bare PID is never trusted");
    assert_eq!(
        stop_agent("task-42", std::slice::from_ref(&group), Duration::from_secs(2)).await,
        1
    );
    assert!(eventually(Duration::from_secs(5), || !alive(sleeper)).await);
    assert!(eventually(Duration::from_secs(5), || !group_alive(group.pgid)).await);
    assert!(
        !recorded_group_is_ours(&group),
        "an empty group is not ours any more"
    );
}
