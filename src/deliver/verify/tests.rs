//! The verification runner against real files, git repositories and processes.

use super::*;
use serde_json::json;
use std::path::Path;
#[cfg(unix)]
use std::sync::atomic::{AtomicU32, Ordering};
#[cfg(unix)]
use std::sync::Arc;

fn step(kind: &str, target: &str) -> Step {
    Step {
        kind: kind.to_owned(),
        target: target.to_owned(),
        description: None,
    }
}

fn spec(dir: &Path, steps: Vec<Step>, allow: bool) -> Spec {
    Spec {
        task_id: "task-1".to_owned(),
        steps,
        skip: false,
        timeout: Duration::from_secs(60),
        workdir: dir.to_path_buf(),
        allow_hub_commands: allow,
        max_retries: 0,
    }
}

/// The one check of a run with the single step `kind target` in `dir`.
async fn one(dir: &Path, kind: &str, target: &str, allow: bool) -> Check {
    let report = run(&spec(dir, vec![step(kind, target)], allow), 1).await;
    assert_eq!(report.checks.len(), 1);
    report.checks.into_iter().next().unwrap()
}

fn check(status: Status) -> Check {
    Check {
        kind: "file_exists".into(),
        target: "x".into(),
        description: None,
        status,
        output: String::new(),
        duration_ms: 0,
    }
}

#[test]
fn spec_reads_the_task_fields_with_defaults_and_caps() {
    let fields = json!({
        "verification_steps": [
            {"type": "file_exists", "target": "a.txt", "description": "made"},
            {"type": "", "target": "b"},
            {"type": "git_clean"},
            {"type": 3, "target": "c"},
            "file_exists",
            {"type": "command_succeeds", "target": "true", "description": 7}
        ],
        "skip_verification": false,
        "max_verification_retries": 9
    });
    let s = Spec::from_task("t-9", fields.as_object().unwrap(), "/w".into(), true);
    assert_eq!(s.task_id, "t-9");
    assert_eq!(
        s.steps,
        vec![
            Step {
                kind: "file_exists".into(),
                target: "a.txt".into(),
                description: Some("made".into())
            },
            step("command_succeeds", "true"),
        ]
    );
    assert!(!s.skip);
    assert_eq!(s.timeout, Duration::from_millis(120_000));
    assert_eq!(s.max_retries, 5);
    assert_eq!(s.workdir, PathBuf::from("/w"));
    assert!(s.allow_hub_commands);

    let fields = json!({"skip_verification": true, "verification_timeout_ms": 60000,
                        "max_verification_retries": 1});
    let s = Spec::from_task("t", fields.as_object().unwrap(), "/w".into(), false);
    assert!(s.skip && s.steps.is_empty());
    assert_eq!((s.timeout, s.max_retries), (Duration::from_secs(60), 1));
    let s = Spec::from_task("t", &Map::new(), "/w".into(), false);
    assert_eq!((s.timeout, s.max_retries, s.skip), (DEFAULT_TIMEOUT, 0, false));
}

#[tokio::test]
async fn skip_verification_runs_nothing_and_no_steps_auto_pass() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), vec![step("command_succeeds", "touch canary")], true);
    s.skip = true;
    let report = run(&s, 1).await;
    assert_eq!(report.status(), Status::Skip);
    assert!(report.passed() && report.checks.is_empty());
    assert!(!dir.path().join("canary").exists());
    assert_eq!(
        report.to_value()["summary"],
        json!({"total": 0, "passed": 0, "failed": 0, "errors": 0, "timed_out": 0, "skipped": 0})
    );
    assert_eq!(
        report.summary_line(),
        "verification skipped: the task set skip_verification"
    );

    let report = run(&spec(dir.path(), vec![], false), 2).await;
    assert_eq!(report.status().as_str(), "auto_pass");
    assert!(report.passed() && report.checks.is_empty());
    assert_eq!(report.run_number, 2);
}

#[tokio::test]
async fn file_exists_looks_in_the_workdir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("CONTRIBUTING.md"), "x").unwrap();
    let c = one(dir.path(), "file_exists", "CONTRIBUTING.md", false).await;
    assert_eq!((c.status, c.output.as_str()), (Status::Pass, ""));
    let c = one(dir.path(), "file_exists", "missing.md", false).await;
    assert_eq!(c.status, Status::Fail);
    assert!(c.output.starts_with("File not found: missing.md"), "{}", c.output);
    let abs = dir.path().join("CONTRIBUTING.md");
    let elsewhere = tempfile::tempdir().unwrap();
    let c = one(elsewhere.path(), "file_exists", abs.to_str().unwrap(), false).await;
    assert_eq!(c.status, Status::Pass);
}

#[tokio::test]
async fn unknown_types_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let c = one(dir.path(), "lint_passes", "src", true).await;
    assert_eq!(
        (c.status, c.output.as_str()),
        (Status::Error, "Unknown check type: lint_passes")
    );
}

#[test]
fn report_status_precedence() {
    use Status::*;
    let of = |s: &[Status]| Status::of_checks(&s.iter().map(|s| check(*s)).collect::<Vec<_>>());
    assert_eq!(of(&[Pass, Fail, Timeout, Error, Skip]), Error);
    assert_eq!(of(&[Pass, Fail, Timeout, Skip]), Timeout);
    assert_eq!(of(&[Pass, Fail, Skip]), Fail);
    assert_eq!(of(&[Skip, Pass]), Pass);
    assert_eq!(of(&[Skip, Skip]), Skip);
    let report = |status| Report {
        task_id: "t".into(),
        run_number: 1,
        status,
        started_at: SystemTime::now(),
        duration_ms: 0,
        timeout_ms: 1,
        checks: vec![],
    };
    let passed: Vec<bool> = [Pass, Fail, Error, Skip, AutoPass, Timeout]
        .into_iter()
        .map(|s| report(s).passed())
        .collect();
    assert_eq!(passed, [true, false, false, true, true, false]);
}

#[test]
fn the_json_has_the_keys_the_hub_stores() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/hub-transcripts/task_complete_with_verification.json"
    );
    let transcript: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let stored = transcript["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["send"]["verification_report"])
        .find(|r| r.is_object())
        .unwrap();
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let mut failing = check(Status::Fail);
    failing.output = "File not found: x".into();
    let mut described = check(Status::Pass);
    described.description = Some("file created".into());
    let report = Report {
        task_id: "task-7".into(),
        run_number: 2,
        status: Status::Fail,
        started_at: std::time::UNIX_EPOCH + Duration::from_millis(1_795_539_977_887),
        duration_ms: 12,
        timeout_ms: 60_000,
        checks: vec![failing, described, check(Status::Skip)],
    };
    let ours = report.to_value();
    assert_eq!(keys(&ours), keys(stored));
    assert_eq!(keys(&ours["checks"][0]), keys(&stored["checks"][0]));
    let mut summary = keys(&stored["summary"]);
    summary.push("skipped".into());
    summary.sort();
    assert_eq!(keys(&ours["summary"]), summary);
    assert_eq!(
        ours["started_at"], 1_795_539_977_887u64,
        "epoch ms, as the hub stored"
    );
    assert_eq!(
        (
            ours["task_id"].clone(),
            ours["run_number"].clone(),
            ours["status"].clone()
        ),
        (json!("task-7"), json!(2), json!("fail"))
    );
    assert_eq!(
        (ours["duration_ms"].clone(), ours["timeout_ms"].clone()),
        (json!(12), json!(60000))
    );
    assert_eq!(ours["checks"][0]["description"], Value::Null);
    assert_eq!(ours["checks"][1]["description"], "file created");
    assert_eq!(
        ours["checks"][0],
        json!({"type": "file_exists", "target": "x", "description": null, "status": "fail",
               "output": "File not found: x", "duration_ms": 0})
    );
    assert_eq!(
        ours["summary"],
        json!({"total": 3, "passed": 1, "failed": 1, "errors": 0, "timed_out": 0, "skipped": 1})
    );
    // Read back (the retry prompt is written from a report that crossed the runner's seam).
    let back = Report::from_value(&ours).expect("a report");
    assert_eq!(
        (back.status, back.run_number, back.checks.clone()),
        (Status::Fail, 2, report.checks.clone())
    );
    assert_eq!(Report::from_value(&json!({"status": "pass"})), None);
    assert_eq!(
        Report::from_value(&json!({"status": "maybe", "checks": []})),
        None
    );
}

#[test]
fn summary_lines_name_the_checks_that_did_not_pass() {
    let mut c = vec![check(Status::Pass), check(Status::Pass), check(Status::Pass)];
    let mut report = Report {
        task_id: "t".into(),
        run_number: 1,
        status: Status::Pass,
        started_at: SystemTime::now(),
        duration_ms: 0,
        timeout_ms: 1,
        checks: c.clone(),
    };
    assert_eq!(report.summary_line(), "verification passed: 3 checks, 3 passed");
    c[2].kind = "test_passes".into();
    c[2].target = "auto".into();
    c[2].status = Status::Fail;
    c[1].kind = "command_succeeds".into();
    c[1].target = "echo `x`\nrm".into();
    c[1].status = Status::Skip;
    report.checks = c;
    report.status = Status::Fail;
    assert_eq!(
        report.summary_line(),
        "verification failed: 3 checks, 1 passed, 1 failed (test_passes `auto`), 1 skipped \
         (command_succeeds `echo 'x' rm`)"
    );
}

#[test]
fn the_retry_prompt_names_failures_and_what_to_keep() {
    let mut failed = check(Status::Fail);
    failed.target = "CONTRIBUTING.md".into();
    failed.output = format!("{}File not found: CONTRIBUTING.md", "x".repeat(600));
    let mut timed_out = check(Status::Timeout);
    timed_out.kind = "command_succeeds".into();
    timed_out.target = "sleep 30".into();
    let mut passed = check(Status::Pass);
    passed.kind = "git_clean".into();
    passed.target = ".".into();
    let report = |checks| Report {
        task_id: "t".into(),
        run_number: 1,
        status: Status::Fail,
        started_at: SystemTime::now(),
        duration_ms: 0,
        timeout_ms: 1,
        checks,
    };
    let previous = "y".repeat(1500);
    let text = retry_prompt(
        1,
        2,
        &report(vec![failed.clone(), passed, timed_out]),
        "Add a CONTRIBUTING file",
        &previous,
    );
    let quoted = format!("...{}File not found: CONTRIBUTING.md", "x".repeat(469));
    let expected = format!(
        "VERIFICATION RETRY 1/2: Your previous work failed verification checks.\n\n\
         FAILED CHECKS:\n\
         - file_exists (CONTRIBUTING.md): FAIL\n  Output: {quoted}\n\
         - command_succeeds (sleep 30): TIMEOUT\n\n\
         PASSED CHECKS (keep these passing):\n- git_clean (.)\n\n\
         ORIGINAL TASK:\nAdd a CONTRIBUTING file\n\n\
         YOUR PREVIOUS OUTPUT:\n{}\n[... 500 more characters cut]\n\n\
         Please fix the issues that caused the failed checks above. Focus only on the failures \
         and keep the passing checks passing.",
        "y".repeat(1000)
    );
    assert_eq!(text, expected);
    let text = retry_prompt(2, 2, &report(vec![failed]), "d", "short");
    assert!(text.starts_with("VERIFICATION RETRY 2/2: "));
    assert!(text.contains("PASSED CHECKS (keep these passing):\n(none)\n"));
    assert!(text.contains("YOUR PREVIOUS OUTPUT:\nshort\n\nPlease fix"));
}

#[cfg(unix)]
mod unix;
