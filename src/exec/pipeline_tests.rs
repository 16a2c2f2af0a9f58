//! The pipeline seam as the runners use it, with a scripted [`Pipeline`]: the direct path's
//! corrective retries, the wake path's finishing, and preparation (failure, workspace).

use super::*;
use crate::config::Config;
use crate::exec::direct::{ExecError, ExecOutput, Job};
use crate::exec::executor::{ExecFn, Executors};
use crate::exec::{ProbeFn, RunRequest, Runners, TaskRunner};
use crate::relay::task::Outcome;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// What the scripted pipeline was asked, and what it answers.
#[derive(Default)]
struct Script {
    /// Verdicts of the next verifications (pass when none is left).
    verdicts: RefCell<VecDeque<bool>>,
    /// Verification hangs (holding `dropped`'s guard).
    hang: Option<Arc<AtomicBool>>,
    /// What `prepare` answers (None: nothing to prepare).
    prepare: Option<Result<Prepared, String>>,
    /// Every call, in order: `prepare t1`, `verify 1 in /w`, `deliver passed=false`.
    calls: RefCell<Vec<String>>,
}

struct Fake(Rc<Script>);

/// Sets its flag when dropped: shows a future was dropped.
struct OnDrop(Arc<AtomicBool>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Pipeline for Fake {
    fn prepare(&self, task: &TaskRecord) -> Option<BoxFut<Result<Prepared, String>>> {
        self.0
            .calls
            .borrow_mut()
            .push(format!("prepare {}", task.task_id));
        let answer = self.0.prepare.clone()?;
        Some(Box::pin(async move { answer }))
    }

    fn verify(&self, task: &TaskRecord, workdir: &Path, run_number: u32) -> BoxFut<Verified> {
        let s = &self.0;
        s.calls
            .borrow_mut()
            .push(format!("verify {run_number} in {}", workdir.display()));
        if let Some(flag) = &s.hang {
            let guard = OnDrop(flag.clone());
            return Box::pin(async move {
                let _guard = guard;
                std::future::pending::<Verified>().await
            });
        }
        let passed = s.verdicts.borrow_mut().pop_front().unwrap_or(true);
        let status = if passed { "pass" } else { "fail" };
        let report = json!({"task_id": task.task_id, "run_number": run_number, "status": status,
            "checks": [{"type":"file_exists","target":"x","status":status}],
            "summary": {"total":1,"passed":u32::from(passed),"failed":u32::from(!passed),"errors":0,"timed_out":0}});
        Box::pin(async move {
            Verified {
                report,
                passed,
                status: status.to_owned(),
            }
        })
    }

    fn retry_prompt(
        &self,
        _task: &TaskRecord,
        attempt: u32,
        max: u32,
        report: &Value,
        previous: &str,
    ) -> String {
        format!(
            "retry {attempt}/{max} after run {}: {previous}",
            report["run_number"]
        )
    }

    fn deliver(
        &self,
        _task: &TaskRecord,
        workdir: &Path,
        mut result: Map<String, Value>,
        verified: &Verified,
    ) -> BoxFut<Map<String, Value>> {
        self.0.calls.borrow_mut().push(format!(
            "deliver passed={} in {}",
            verified.passed,
            workdir.display()
        ));
        if verified.passed {
            result.insert("pr_url".into(), json!("http://127.0.0.1/pr/1"));
            result.insert("branch".into(), json!("a1/fix"));
        } else {
            result.insert("delivery".into(), json!("verification failed: nothing pushed"));
        }
        Box::pin(async move { result })
    }
}

/// Executors that record each job and answer `answer N` (3 tokens in, 4 out), failing the calls
/// numbered in `fail_on`.
fn executors(jobs: Rc<RefCell<Vec<Job>>>, fail_on: &'static [usize]) -> Option<(Executors, ProbeFn)> {
    let exec = move |jobs: Rc<RefCell<Vec<Job>>>| -> ExecFn {
        Box::new(move |job, _events| {
            jobs.borrow_mut().push(job);
            let n = jobs.borrow().len();
            Box::pin(async move {
                if fail_on.contains(&n) {
                    return Err(ExecError(format!("call {n} failed")));
                }
                Ok(ExecOutput {
                    output: format!("answer {n}"),
                    model_used: "m".into(),
                    tokens_in: 3,
                    tokens_out: 4,
                    ..ExecOutput::default()
                })
            })
        })
    };
    let probe: ProbeFn = Box::new(|_| Box::pin(async { Ok(vec!["m".to_owned()]) }));
    Some((
        Executors {
            ollama: exec(jobs.clone()),
            claude: exec(jobs.clone()),
            shell: exec(jobs),
        },
        probe,
    ))
}

fn config(dir: &Path, keys: Value) -> Config {
    // claude_command: a program that exists (the in-test executor runs instead).
    let program = std::env::current_exe().unwrap().display().to_string();
    let mut v = json!({"agent_id":"a1","token":TOKEN,"hub_url":"ws://127.0.0.1:4000/ws",
        "direct_execution":"on","allow_hub_commands":true,"claude_command":program});
    for (k, val) in keys.as_object().unwrap() {
        v[k] = val.clone();
    }
    let mut config = Config::parse(&v.to_string(), &dir.join("config.json")).unwrap();
    config.results_dir = dir.join("results");
    config.queue_file = dir.join("queue.json");
    config
}

struct Setup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    runners: Runners,
    script: Rc<Script>,
    jobs: Rc<RefCell<Vec<Job>>>,
}

fn setup(script: Script, keys: Value, fail_on: &'static [usize]) -> Setup {
    let tmp = tempfile::Builder::new()
        .prefix("agentcom-pipeline-")
        .tempdir()
        .unwrap();
    let dir = tmp.path().to_path_buf();
    let script = Rc::new(script);
    let jobs = Rc::new(RefCell::new(Vec::new()));
    let runners = Runners::with(
        &config(&dir, keys),
        executors(jobs.clone(), fail_on),
        Box::new(Fake(script.clone())),
    );
    Setup {
        _dir: tmp,
        dir,
        runners,
        script,
        jobs,
    }
}

impl Setup {
    /// Start `task` (attempt 1); it must not end at once (a route that cannot run).
    fn begin(&mut self, task: TaskRecord) {
        let now = self.runners.handle(start(task));
        assert!(
            !now.iter().any(|i| matches!(i, RelayInput::Executed { .. })),
            "{now:?}"
        );
    }
}

fn failing(n: usize) -> Script {
    Script {
        verdicts: RefCell::new(std::iter::repeat_n(false, n).collect()),
        ..Script::default()
    }
}

/// A task routed to `target` with these `max_verification_retries`.
fn task(target: &str, retries: Value) -> TaskRecord {
    let frame = json!({"type":"task_assign","task_id":"t1","description":"d","generation":1,
        "max_verification_retries": retries, "metadata": {"shell_command": "true"},
        "routing_decision": {"target_type": target, "selected_endpoint": "127.0.0.1:9", "selected_model": "m"}});
    TaskRecord::from_assign(frame.as_object().unwrap(), 0).unwrap()
}

fn start(task: TaskRecord) -> RunRequest {
    RunRequest::Start { task, attempt: 1 }
}

/// Everything the runners say until the run's end (`Executed`, `Finished` or a failed
/// `Prepared`), and that end.
async fn until_end(r: &mut Runners) -> (Vec<RelayInput>, RelayInput) {
    let mut said = Vec::new();
    loop {
        let input = tokio::time::timeout(Duration::from_secs(7200), r.next_input())
            .await
            .expect("the runners said nothing");
        match input {
            RelayInput::Executed { .. }
            | RelayInput::Finished { .. }
            | RelayInput::Prepared { outcome: Err(_), .. } => return (said, input),
            other => said.push(other),
        }
    }
}

fn executed(input: RelayInput) -> Map<String, Value> {
    match input {
        RelayInput::Executed {
            outcome: Ok(Value::Object(result)),
            ..
        } => result,
        other => panic!("expected a result, got {other:?}"),
    }
}

fn runs(history: &Value) -> Vec<u64> {
    history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_number"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn failed_checks_run_an_llm_task_again_with_the_corrective_prompt_until_they_pass() {
    let mut s = setup(failing(2), json!({}), &[]);
    s.begin(task("ollama", json!(5)));
    let (said, end) = until_end(&mut s.runners).await;
    let result = executed(end);
    let descriptions: Vec<String> = s.jobs.borrow().iter().map(|j| j.description.clone()).collect();
    assert_eq!(
        descriptions,
        [
            "d",
            "retry 1/5 after run 1: answer 1",
            "retry 2/5 after run 2: answer 2"
        ]
    );
    assert_eq!(result["output"], "answer 3");
    assert_eq!(result["verification_status"], "verified");
    assert_eq!(result["verification_attempts"], 3);
    assert_eq!(
        (result["tokens_in"].clone(), result["tokens_out"].clone()),
        (json!(9), json!(12))
    );
    assert_eq!(runs(&result["verification_history"]), [1, 2, 3]);
    assert_eq!(result["verification_report"]["run_number"], 3);
    assert_eq!(result["pr_url"], "http://127.0.0.1/pr/1");
    let sidecar_folder = s.dir.display().to_string();
    assert_eq!(
        *s.script.calls.borrow(),
        [
            "prepare t1".to_owned(),
            format!("verify 1 in {sidecar_folder}"),
            format!("verify 2 in {sidecar_folder}"),
            format!("verify 3 in {sidecar_folder}"),
            format!("deliver passed=true in {sidecar_folder}"),
        ]
    );
    // The dashboard hears of each retry (status events, coalesced when nothing came between);
    // the log has each run and the delivery.
    let statuses: String = said
        .iter()
        .filter_map(|i| match i {
            RelayInput::ExecutionEvent { event, .. } if event["event_type"] == "status" => {
                Some(event["text"].as_str().unwrap().to_owned())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        statuses,
        "Verification retry 1/5: fixing 1 failed checks...Verification retry 2/5: fixing 1 failed checks..."
    );
    let logged: Vec<String> = said
        .iter()
        .filter_map(|i| match i {
            RelayInput::Log(e) => Some(e.name()),
            _ => None,
        })
        .collect();
    assert_eq!(logged.iter().filter(|n| *n == "verification_finished").count(), 3);
    assert_eq!(logged.iter().filter(|n| *n == "verification_retry").count(), 2);
    assert_eq!(logged.last().map(String::as_str), Some("delivery"));
    // The relay lifts the report and the history to task_complete's top level.
    match Outcome::complete(result) {
        Outcome::Complete {
            result,
            tokens_used,
            verification_report,
            verification_history,
        } => {
            assert!(
                !result.contains_key("verification_report") && !result.contains_key("verification_history")
            );
            assert_eq!(tokens_used, Some(21));
            assert_eq!(verification_report.unwrap()["run_number"], 3);
            assert_eq!(verification_history.unwrap().len(), 3);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn checks_still_failing_after_the_last_retry_are_a_partial_pass_and_nothing_is_delivered() {
    let mut s = setup(failing(9), json!({}), &[]);
    s.begin(task("claude", json!(1)));
    let result = executed(until_end(&mut s.runners).await.1);
    assert_eq!(s.jobs.borrow().len(), 2);
    assert_eq!(result["verification_status"], "partial_pass");
    assert_eq!(result["verification_attempts"], 2);
    assert_eq!(result["verification_report"]["status"], "fail");
    assert_eq!(result["delivery"], "verification failed: nothing pushed");
    assert!(s
        .script
        .calls
        .borrow()
        .last()
        .unwrap()
        .starts_with("deliver passed=false"));
}

#[tokio::test]
async fn retries_are_capped_at_5_and_absent_means_none() {
    let mut s = setup(failing(99), json!({}), &[]);
    s.begin(task("ollama", json!(9)));
    let result = executed(until_end(&mut s.runners).await.1);
    assert_eq!(s.jobs.borrow().len(), 6, "1 + at most 5 retries");
    assert_eq!(runs(&result["verification_history"]), [1, 2, 3, 4, 5, 6]);
    let mut s = setup(failing(99), json!({}), &[]);
    s.begin(task("ollama", Value::Null));
    let result = executed(until_end(&mut s.runners).await.1);
    assert_eq!(s.jobs.borrow().len(), 1);
    assert_eq!(result["verification_status"], "partial_pass");
}

#[tokio::test]
async fn the_shell_tier_is_verified_once_and_never_run_again() {
    let mut s = setup(failing(9), json!({}), &[]);
    s.begin(task("sidecar", json!(5)));
    let result = executed(until_end(&mut s.runners).await.1);
    assert_eq!(s.jobs.borrow().len(), 1);
    assert_eq!(result["verification_status"], "partial_pass");
    assert_eq!(runs(&result["verification_history"]), [1]);
}

#[tokio::test]
async fn a_retry_that_fails_to_execute_keeps_the_reports_so_far_and_a_first_failure_is_the_failure() {
    let mut s = setup(failing(9), json!({}), &[2]);
    s.begin(task("ollama", json!(3)));
    let result = executed(until_end(&mut s.runners).await.1);
    assert_eq!(s.jobs.borrow().len(), 2);
    assert_eq!(result["verification_status"], "execution_failed");
    assert_eq!(result["execution_error"], "call 2 failed");
    assert_eq!(result["output"], "answer 1");
    assert_eq!(result["verification_attempts"], 1);
    assert_eq!(runs(&result["verification_history"]), [1]);

    let mut s = setup(failing(9), json!({}), &[1]);
    s.begin(task("ollama", json!(3)));
    match until_end(&mut s.runners).await.1 {
        RelayInput::Executed {
            outcome: Err(reason), ..
        } => assert_eq!(reason, "call 1 failed"),
        other => panic!("{other:?}"),
    }
    assert!(
        !s.script.calls.borrow().iter().any(|c| c.starts_with("verify")),
        "nothing to verify"
    );
}

#[tokio::test(start_paused = true)]
async fn verification_runs_within_the_execution_timeout() {
    let dropped = Arc::new(AtomicBool::new(false));
    let script = Script {
        hang: Some(dropped.clone()),
        ..Script::default()
    };
    let mut s = setup(script, json!({"execution_timeout_ms": 60_000}), &[]);
    s.begin(task("ollama", json!(0)));
    let began = tokio::time::Instant::now();
    match until_end(&mut s.runners).await.1 {
        RelayInput::Executed {
            outcome: Err(reason), ..
        } => assert!(reason.starts_with("execution_timeout: "), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(began.elapsed(), Duration::from_secs(60));
    assert!(
        dropped.load(Ordering::SeqCst),
        "the hanging verification was dropped"
    );
}

#[tokio::test]
async fn a_failed_preparation_fails_the_task_and_runs_nothing() {
    let script = Script {
        prepare: Some(Err(
            "workspace setup failed for /srv/git/r.git: git clone exited 128".into(),
        )),
        ..Script::default()
    };
    let mut s = setup(script, json!({}), &[]);
    assert!(
        s.runners.handle(start(task("ollama", json!(0)))).is_empty(),
        "waits for it"
    );
    let (said, end) = until_end(&mut s.runners).await;
    assert!(said.is_empty(), "{said:?}");
    assert_eq!(
        end,
        RelayInput::Prepared {
            task_id: "t1".into(),
            outcome: Err("workspace setup failed for /srv/git/r.git: git clone exited 128".into())
        }
    );
    assert!(s.jobs.borrow().is_empty());
}

#[tokio::test]
async fn a_stop_drops_a_preparation_and_a_later_start_prepares_again() {
    let script = Script {
        prepare: Some(Ok(Prepared::default())),
        ..Script::default()
    };
    let mut s = setup(script, json!({}), &[]);
    s.begin(task("ollama", json!(0)));
    s.runners.handle(RunRequest::Stop { task_id: "t1".into() });
    let quiet = tokio::time::timeout(Duration::from_millis(200), s.runners.next_input()).await;
    assert!(quiet.is_err(), "a stopped preparation says nothing: {quiet:?}");
    s.begin(task("ollama", json!(0)));
    executed(until_end(&mut s.runners).await.1);
    assert_eq!(
        s.script
            .calls
            .borrow()
            .iter()
            .filter(|c| c.starts_with("prepare"))
            .count(),
        2
    );
}

#[tokio::test]
async fn the_prepared_workspace_is_recorded_and_is_where_the_execution_and_its_checks_run() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("workspaces").join("r");
    let script = Script {
        prepare: Some(Ok(Prepared {
            workdir: Some(ws.clone()),
            warning: Some("the workspace could not be refreshed; using it as it is".into()),
        })),
        ..Script::default()
    };
    let mut s = setup(script, json!({}), &[]);
    s.begin(task("ollama", json!(0)));
    let (said, end) = until_end(&mut s.runners).await;
    executed(end);
    assert_eq!(
        said[0],
        RelayInput::Prepared {
            task_id: "t1".into(),
            outcome: Ok(Some(ws.clone()))
        }
    );
    assert!(
        matches!(&said[1], RelayInput::Log(Event::PrepareWarning { warning, .. }) if warning.contains("refreshed"))
    );
    assert!(matches!(&said[2], RelayInput::Log(Event::ExecutionChosen { .. })));
    assert_eq!(s.jobs.borrow()[0].workdir, ws);
    let at = ws.display();
    assert_eq!(
        s.script.calls.borrow()[1..],
        [
            format!("verify 1 in {at}"),
            format!("deliver passed=true in {at}")
        ]
    );
}

#[cfg(unix)]
#[tokio::test]
async fn the_woken_agent_gets_the_workspace_and_a_later_wake_attempt_is_not_prepared_again() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("it's a workspace");
    let out = tmp.path().join("seen");
    let script = Script {
        prepare: Some(Ok(Prepared {
            workdir: Some(ws.clone()),
            warning: None,
        })),
        ..Script::default()
    };
    let wake = format!(
        "printf '%s|%s' ${{WORKSPACE}} \"$AGENTCOM_WORKSPACE\" > {}",
        crate::exec::template::quote_sh(&out.display().to_string())
    );
    let mut s = setup(script, json!({"direct_execution":"off","wake_command":wake}), &[]);
    let mut t = task("ollama", json!(0));
    s.runners.handle(start(t.clone()));
    loop {
        match until_end_or_wake(&mut s.runners).await {
            RelayInput::WakeFinished { end, .. } => {
                assert_eq!(end, crate::relay::machine::WakeEnd::Success);
                break;
            }
            RelayInput::Prepared { outcome, .. } => assert_eq!(outcome, Ok(Some(ws.clone()))),
            _ => {}
        }
    }
    let w = ws.display();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), format!("{w}|{w}"));
    let task_json =
        std::fs::read_to_string(crate::relay::runtime::task_file(&s.dir.join("results"), "t1")).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&task_json).unwrap()["workspace"],
        json!(w.to_string())
    );
    // Attempt 2 (the relay's record now holds the workspace): no second preparation.
    t.workspace = Some(ws.clone());
    s.runners.handle(RunRequest::Start { task: t, attempt: 2 });
    assert_eq!(
        s.script
            .calls
            .borrow()
            .iter()
            .filter(|c| c.starts_with("prepare"))
            .count(),
        1
    );
}

#[cfg(unix)]
async fn until_end_or_wake(r: &mut Runners) -> RelayInput {
    tokio::time::timeout(Duration::from_secs(10), r.next_input())
        .await
        .expect("the runners said nothing within 10 s")
}

#[tokio::test]
async fn a_woken_agents_result_is_verified_in_its_workspace_then_delivered() {
    let mut s = setup(failing(1), json!({}), &[]);
    let mut t = task("ollama", json!(5));
    t.workspace = Some(PathBuf::from("/w/r"));
    let own = json!({"run_number": 1, "status": "pass", "by": "the agent"});
    let result = json!({"status":"success","output":"done","verification_report": own});
    assert!(s
        .runners
        .handle(RunRequest::Finish {
            task: t,
            result: result.as_object().unwrap().clone(),
        })
        .is_empty());
    let (said, end) = until_end(&mut s.runners).await;
    let names: Vec<String> = said
        .iter()
        .map(|i| match i {
            RelayInput::Log(e) => e.name(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        ["verification_started", "verification_finished", "delivery"]
    );
    let RelayInput::Finished { task_id, result } = end else {
        panic!("{end:?}")
    };
    assert_eq!(task_id, "t1");
    assert_eq!(result["output"], "done");
    assert_eq!(result["verification_status"], "failed", "it still completes");
    assert_eq!(result["verification_report"]["status"], "fail");
    assert_eq!(
        result["verification_history"],
        json!([own, result["verification_report"].clone()]),
        "the agent's own run first, then ours"
    );
    assert_eq!(result["delivery"], "verification failed: nothing pushed");
    assert_eq!(
        *s.script.calls.borrow(),
        ["verify 2 in /w/r", "deliver passed=false in /w/r"],
        "our run numbered after the agent's run 1"
    );
    // Without a workspace: repo_dir, else the sidecar's folder.
    let s = setup(Script::default(), json!({}), &[]);
    let plain = task("ollama", json!(0));
    assert_eq!(s.runners.workdir(&plain), s.dir);
    let mut with_repo = config(&s.dir, json!({}));
    with_repo.repo_dir = Some(PathBuf::from("/srv/repo"));
    let r = Runners::with(&with_repo, None, Box::new(NoPipeline));
    assert_eq!(r.workdir(&plain), PathBuf::from("/srv/repo"));
}

#[tokio::test]
async fn a_stop_drops_the_finishing_and_nothing_more_is_said() {
    let dropped = Arc::new(AtomicBool::new(false));
    let script = Script {
        hang: Some(dropped.clone()),
        ..Script::default()
    };
    let mut s = setup(script, json!({}), &[]);
    s.runners.handle(RunRequest::Finish {
        task: task("ollama", json!(0)),
        result: json!({"status":"success"}).as_object().unwrap().clone(),
    });
    let first = tokio::time::timeout(Duration::from_secs(5), s.runners.next_input()).await;
    assert!(
        matches!(first, Ok(RelayInput::Log(Event::VerificationStarted { .. }))),
        "{first:?}"
    );
    assert!(!dropped.load(Ordering::SeqCst));
    s.runners.handle(RunRequest::Stop { task_id: "t1".into() });
    assert!(dropped.load(Ordering::SeqCst), "the checks were dropped");
    let quiet = tokio::time::timeout(Duration::from_millis(200), s.runners.next_input()).await;
    assert!(quiet.is_err(), "{quiet:?}");
}

#[tokio::test]
async fn no_pipeline_skips_or_auto_passes_and_says_why() {
    let verify = |extra: Value| {
        let mut frame = json!({"task_id":"t1","verification_timeout_ms":5000});
        for (k, v) in extra.as_object().unwrap() {
            frame[k] = v.clone();
        }
        let t = TaskRecord::from_assign(frame.as_object().unwrap(), 0).unwrap();
        NoPipeline.verify(&t, Path::new("."), 2)
    };
    let v = verify(json!({})).await;
    assert_eq!((v.status.as_str(), v.passed), ("auto_pass", true));
    assert_eq!(v.report["run_number"], 2);
    assert_eq!(v.report["timeout_ms"], 5000);
    assert_eq!(
        v.report["summary"],
        json!({"total":0,"passed":0,"failed":0,"errors":0,"timed_out":0})
    );
    assert_eq!(verification_status(&v), "verified");
    let v = verify(json!({"verification_steps":[{"type":"file_exists","target":"x"}]})).await;
    assert_eq!(v.status, "skip", "checks it cannot run are not passed");
    assert_eq!(
        summary_text(&v.report),
        "no checks run: this sidecar runs no verification checks"
    );
    assert_eq!(verification_status(&v), "skipped");
    assert_eq!(verify(json!({"skip_verification":true})).await.status, "skip");
    let r = json!({"summary":{"total":3,"passed":1,"failed":1,"errors":0,"timed_out":1}});
    assert_eq!(summary_text(&r), "1 of 3 checks passed, 1 failed, 1 timed out");
}

/// The delivery log line says what a person needs: the pull request and branch, and a label
/// problem beside a delivered pull request; why delivery stopped otherwise.
#[test]
fn the_delivery_log_line_names_the_pull_request_and_any_label_problem() {
    let line = |result: Value| {
        let Value::Object(map) = result else {
            unreachable!()
        };
        delivery_event("task-1", &map).map(|e| e.describe())
    };
    assert_eq!(
        line(json!({"pr_url": "https://x/pull/1", "branch": "a/b", "delivery": {"status": "pr_opened"}}))
            .unwrap(),
        "task task-1 delivered: pull request https://x/pull/1 (branch a/b)"
    );
    assert_eq!(
        line(json!({"pr_url": "https://x/pull/1", "branch": "a/b",
            "delivery": {"status": "pr_opened", "label_error": "opened without labels: HTTP 403"}}))
        .unwrap(),
        "task task-1 delivered: pull request https://x/pull/1 (branch a/b); labels: opened without labels: HTTP 403"
    );
    assert_eq!(
        line(json!({"delivery": {"status": "withheld", "branch": "a/b", "reason": "verification fail"}}))
            .unwrap(),
        "task task-1: delivery withheld: verification fail"
    );
    assert_eq!(line(json!({"output": "no delivery"})), None);
}
