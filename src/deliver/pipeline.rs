//! The real [`Pipeline`]: a task's workspace and branch before it runs, its verification
//! checks, then commit, push, pull request and the hub's risk classification (protocol §11.8-§11.9).

use super::{pr, verify, workspace};
use crate::config::Config;
use crate::event_log::Event;
use crate::exec::pipeline::{BoxFut, Pipeline, Prepared, Verified};
use crate::hub_api::HubApi;
use crate::relay::task::TaskRecord;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// What the pipeline reads from the config.
#[derive(Clone)]
pub struct DeliveryPipeline {
    agent_id: String,
    repo_dir: Option<PathBuf>,
    workspaces_dir: PathBuf,
    allow_hub_commands: bool,
    gh_command: String,
    reviewer: Option<String>,
    hub_api_url: String,
    api: Option<Rc<HubApi>>,
}

impl DeliveryPipeline {
    /// The pipeline a config asks for (the hub API client is built once; without one, the
    /// classification says it is unavailable).
    pub fn new(config: &Config) -> DeliveryPipeline {
        DeliveryPipeline {
            agent_id: config.agent_id.clone(),
            repo_dir: config.repo_dir.clone(),
            workspaces_dir: config.workspaces_dir.clone(),
            allow_hub_commands: config.allow_hub_commands,
            gh_command: config.gh_command.clone(),
            reviewer: config.reviewer.clone(),
            hub_api_url: config.hub_api_url.clone(),
            api: HubApi::from_config(config).ok().map(Rc::new),
        }
    }
}

/// The task's text field `key` (`repo`, `branch`), trimmed, when it is a non-empty string.
fn task_text(task: &TaskRecord, key: &str) -> Option<String> {
    task.extra
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
}

/// The `delivery` object of a delivery that stopped before a push: its status (`withheld`,
/// `nothing` or `failed`), the branch, and why (`error` for a failure, else `reason`).
fn stopped(status: &str, branch: &str, why: impl std::fmt::Display) -> Value {
    let key = if status == "failed" { "error" } else { "reason" };
    let mut delivery = json!({"status": status, "branch": branch});
    delivery[key] = Value::from(why.to_string());
    delivery
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

impl Pipeline for DeliveryPipeline {
    fn prepare(&self, task: &TaskRecord) -> Option<BoxFut<Result<Prepared, String>>> {
        let repo = task_text(task, "repo");
        if repo.is_none() && self.repo_dir.is_none() {
            return None;
        }
        let workspaces = self.workspaces_dir.clone();
        let repo_dir = self.repo_dir.clone();
        let branch = pr::branch_name(&self.agent_id, &task.description);
        let base = task_text(task, "branch");
        let task_id = task.task_id.clone();
        Some(Box::pin(async move {
            let (dir, mut warning) = match &repo {
                Some(url) => {
                    let p = workspace::prepare(&workspaces, url)
                        .await
                        .map_err(|e| format!("workspace setup failed for {url}: {e}"))?;
                    (p.dir, p.warning)
                }
                None => (repo_dir.expect("checked"), None),
            };
            let started = match pr::start_branch(&dir, &branch, base.as_deref()).await {
                Ok(started) => pr::mark_started(&dir, &branch, &task_id).await.map(|()| started),
                Err(e) => Err(e),
            };
            let problem = match started {
                Ok(started) => started.warning,
                Err(e) => Some(format!(
                    "branch {branch} not started in {}: {e}; the task goes on, but its work will \
                     not be committed nor pushed",
                    dir.display()
                )),
            };
            if let Some(w) = problem {
                warning = Some(match warning {
                    Some(first) => format!("{first}; {w}"),
                    None => w,
                });
            }
            Ok(Prepared {
                workdir: Some(dir),
                warning,
            })
        }))
    }

    fn verify(&self, task: &TaskRecord, workdir: &Path, run_number: u32) -> BoxFut<Verified> {
        let spec = verify::Spec::from_task(
            &task.task_id,
            &task.extra,
            workdir.to_path_buf(),
            self.allow_hub_commands,
        );
        Box::pin(async move {
            let report = verify::run(&spec, run_number).await;
            Verified {
                passed: report.passed(),
                status: report.status().as_str().to_owned(),
                report: report.to_value(),
            }
        })
    }

    fn retry_prompt(
        &self,
        task: &TaskRecord,
        attempt: u32,
        max: u32,
        report: &Value,
        previous_output: &str,
    ) -> String {
        match verify::Report::from_value(report) {
            Some(report) => verify::retry_prompt(attempt, max, &report, &task.description, previous_output),
            None => {
                crate::exec::pipeline::NoPipeline.retry_prompt(task, attempt, max, report, previous_output)
            }
        }
    }

    fn deliver(
        &self,
        task: &TaskRecord,
        workdir: &Path,
        result: Map<String, Value>,
        verified: &Verified,
    ) -> BoxFut<Map<String, Value>> {
        let from_repo = task_text(task, "repo").is_some() || self.repo_dir.is_some();
        if !from_repo {
            return Box::pin(async move { result });
        }
        let (me, task, repo) = (self.clone(), task.clone(), workdir.to_path_buf());
        if !verified.passed {
            let failed = format!("verification {}", verified.status);
            return Box::pin(async move { me.withhold(&task, &repo, &failed, result).await });
        }
        let summary = verify::Report::from_value(&verified.report)
            .map(|r| r.summary_line())
            .unwrap_or_else(|| format!("verification {}", verified.status));
        Box::pin(async move { me.deliver_verified(&task, &repo, summary, result).await })
    }

    fn settle(&self, task_id: &str, workdir: &Path) -> Option<BoxFut<Option<Event>>> {
        let (me, task_id, repo) = (self.clone(), task_id.to_owned(), workdir.to_path_buf());
        Some(Box::pin(async move { me.keep_left(task_id, repo).await }))
    }
}

impl DeliveryPipeline {
    /// The task is over: what it left uncommitted on a branch it started is kept as a local
    /// commit (a success was committed by its delivery already, so this is a failed, cancelled
    /// or handed-back task's work), and said in the log.
    async fn keep_left(&self, task_id: String, repo: PathBuf) -> Option<Event> {
        let (branch, commit) = pr::keep_left(&repo, &task_id, &self.agent_id).await.ok()??;
        let reason = format!(
            "the task ended without a delivered success: what it left is kept as commit {commit} \
             on the local branch {branch} in {} (not pushed), so the next task starts from a \
             clean tree",
            repo.display()
        );
        Some(Event::Delivery {
            task_id,
            status: Some("withheld".into()),
            pr_url: None,
            branch: Some(branch),
            reason: Some(reason),
        })
    }

    /// Delivery withheld (`failed`: what verification said): nothing is pushed, and the work is
    /// kept as a local commit on the task's branch, so that the next task on this repository
    /// starts from a clean tree.
    async fn withhold(
        &self,
        task: &TaskRecord,
        repo: &Path,
        failed: &str,
        mut result: Map<String, Value>,
    ) -> Map<String, Value> {
        let branch = pr::branch_name(&self.agent_id, &task.description);
        let kept = pr::keep_withheld(
            repo,
            &branch,
            &task.task_id,
            &self.agent_id,
            &task.description,
            failed,
        )
        .await;
        let why = match kept {
            Ok(Some(commit)) => format!(
                "{failed}: nothing was pushed; the work is kept as commit {commit} on the local \
                 branch {branch} in {}",
                repo.display()
            ),
            Ok(None) => format!("{failed}: nothing was pushed"),
            Err(e) => format!(
                "{failed}: nothing was pushed; the work stays uncommitted in {} ({e})",
                repo.display()
            ),
        };
        result.insert("delivery".into(), stopped("withheld", &branch, why));
        result
    }

    /// Verified work: commit, push, pull request, the hub's classification and the risk label,
    /// each step recorded in `result` (`branch`, `commit`, `pr_url`, `risk_classification`,
    /// `delivery`).
    async fn deliver_verified(
        &self,
        task: &TaskRecord,
        repo: &Path,
        summary: String,
        mut result: Map<String, Value>,
    ) -> Map<String, Value> {
        let branch = pr::branch_name(&self.agent_id, &task.description);
        // A branch not started for this task at accept (uncommitted changes in repo_dir, ...):
        // the tree may hold someone's own work, which must not be committed and pushed as the
        // task's.
        if !pr::started_for(repo, &branch, &task.task_id).await {
            let reason = format!(
                "the branch {branch} was not started for this task when it was accepted (the \
                 log's prepare_warning says why, e.g. uncommitted changes in {}): nothing was \
                 committed or pushed, since the changes there cannot be told apart from the \
                 task's; commit and push the work yourself",
                repo.display()
            );
            result.insert("delivery".into(), stopped("withheld", &branch, reason));
            return result;
        }
        let base_branch = match task_text(task, "branch") {
            Some(b) => b,
            None => match pr::default_branch(repo).await {
                Ok(b) => b,
                Err(e) => {
                    result.insert("delivery".into(), stopped("failed", &branch, e));
                    return result;
                }
            },
        };
        let mut d = pr::Delivery {
            repo: repo.to_path_buf(),
            branch: branch.clone(),
            base_branch,
            task_id: task.task_id.clone(),
            agent_id: self.agent_id.clone(),
            description: task.description.clone(),
            success_criteria: strings(task.extra.get("success_criteria")),
            verification_summary: summary,
            task_link: Some(format!("{}/api/tasks/{}", self.hub_api_url, task.task_id)),
            gh_command: self.gh_command.clone(),
            reviewer: self.reviewer.clone(),
            labels: pr::task_labels(&self.agent_id, task.metadata["priority"].as_str()),
        };
        let diff = match pr::commit_and_push(&d).await {
            Err(e) => {
                result.insert("delivery".into(), stopped("failed", &branch, e));
                return result;
            }
            Ok(pr::Pushed::Nothing) => {
                let why = "no changes and no commits on the branch: nothing was pushed";
                result.insert("delivery".into(), stopped("nothing", &branch, why));
                return result;
            }
            Ok(pr::Pushed::Branch { branch, head, diff }) => {
                // The pull request is for the branch as pushed (another name when origin's
                // branch of this name holds another task's work).
                d.branch = branch;
                result.insert("branch".into(), json!(d.branch));
                result.insert("commit".into(), json!(head));
                diff
            }
        };
        let mut delivery = json!({"status": "pushed", "branch": d.branch});
        let mut pr_url = None;
        match pr::open_pr(&d, &diff).await {
            Ok(opened) => {
                result.insert("pr_url".into(), json!(opened.url));
                delivery["status"] = json!("pr_opened");
                delivery["pr_url"] = json!(opened.url);
                delivery["labels"] = json!(opened.labels);
                if let Some(e) = opened.label_error {
                    delivery["label_error"] = json!(e);
                }
                pr_url = Some(opened.url);
            }
            Err(e) => delivery["error"] = json!(e.to_string()),
        }
        let classification = match &self.api {
            Some(api) => api
                .classify(&task.task_id, &diff.to_value())
                .await
                .map_err(|e| e.to_string()),
            None => Err("no hub API client".to_owned()),
        };
        // The hub's tier becomes the pull request's `risk:tier-<n>` label (not a tier assumed
        // because the hub could not be asked).
        let risk = classification
            .as_ref()
            .ok()
            .and_then(|c| c["tier"].as_u64())
            .and_then(pr::risk_label);
        if let (Some(url), Some(label)) = (&pr_url, risk) {
            match pr::add_label(&d, url, &label, pr::GH_TIMEOUT).await {
                Ok(()) => {
                    if let Some(labels) = delivery["labels"].as_array_mut() {
                        labels.push(json!(label.name));
                    }
                }
                Err(e) => delivery["label_error"] = json!(e.to_string()),
            }
        }
        let classification = classification.unwrap_or_else(|e| {
            json!({"tier": 2, "reasons": [format!("classification unavailable: {e}")], "auto_merge_eligible": false})
        });
        result.insert("risk_classification".into(), classification);
        result.insert("delivery".into(), delivery);
        result
    }
}
