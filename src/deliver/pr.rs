//! The task's branch at accept; commit, push and the pull request after verification (§11.9).
//!
//! Unlike Node's `agentcom-git.js`, nothing here goes through a shell: the branch name, the
//! commit message, the title and the body are single argv elements or files outside the
//! repository, so a description full of shell syntax is only text. The branch starts from the
//! task's `branch` when it names one (Node always used `origin/main`), and the sidecar commits
//! what the agent left uncommitted (Node pushed only the agent's own commits).

use super::git::{git, git_status, GitError, LOCAL_TIMEOUT, NETWORK_TIMEOUT};
use std::path::{Path, PathBuf};

mod diff;
mod gh;
mod labels;

pub use diff::{diff_meta, DiffMeta};
pub use gh::{open_pr, open_pr_within, pr_body, pr_title, Opened, GH_TIMEOUT};
pub use labels::{add_label, risk_label, task_labels, Label};

/// The longest description slug in a branch name (§11.9: 40, as Node).
const SLUG_MAX: usize = 40;
/// The longest agent part of a branch name.
const AGENT_MAX: usize = 64;

/// The branch for a task: `<agent_id>/<slug of the description>`. The agent id is kept whole
/// but made ref-safe; the slug is §11.9's (lower-case `a-z 0-9 -`, runs of `-` collapsed,
/// trimmed, at most 40 characters, `task` when nothing is left). Always a valid branch name.
pub fn branch_name(agent_id: &str, description: &str) -> String {
    format!("{}/{}", ref_safe_agent(agent_id), description_slug(description))
}

/// §11.9's slug of a description: what is left of it in `a-z 0-9 -` (other characters
/// dropped, white space as `-`), never empty.
fn description_slug(description: &str) -> String {
    let mut slug = String::new();
    for c in description.to_lowercase().chars() {
        let c = if c.is_whitespace() { '-' } else { c };
        if c.is_ascii_lowercase() || c.is_ascii_digit() || (c == '-' && !slug.ends_with('-')) {
            slug.push(c);
        }
    }
    let slug: String = slug.trim_matches('-').chars().take(SLUG_MAX).collect();
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        "task".to_owned()
    } else {
        slug.to_owned()
    }
}

/// `agent_id` as one component of a ref: characters outside `A-Z a-z 0-9 . _ -` as `-`, no
/// `..`, no leading or trailing `.` or `-`, no `.lock` at its end, never empty.
fn ref_safe_agent(agent_id: &str) -> String {
    let mut out = String::new();
    for c in agent_id.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            c
        } else {
            '-'
        };
        let last = out.chars().last();
        if (c == '-' && last == Some('-')) || (c == '.' && last == Some('.')) {
            continue;
        }
        out.push(c);
    }
    let mut out: String = out.trim_matches(['-', '.']).chars().take(AGENT_MAX).collect();
    loop {
        let trimmed = out.trim_end_matches(['-', '.']);
        if let Some(stem) = trimmed.strip_suffix(".lock") {
            out = format!("{stem}-lock");
        } else {
            out = trimmed.to_owned();
            break;
        }
    }
    if out.is_empty() {
        "agent".to_owned()
    } else {
        out
    }
}

/// The repository's default branch: the target of `origin/HEAD`, else `main` or `master`,
/// whichever exists on origin (as last fetched).
pub async fn default_branch(repo: &Path) -> Result<String, GitError> {
    let head = git_status(
        repo,
        &["symbolic-ref", "--quiet", "refs/remotes/origin/HEAD"],
        LOCAL_TIMEOUT,
    )
    .await?;
    if head.code == Some(0) {
        if let Some(name) = head.stdout.trim().strip_prefix("refs/remotes/origin/") {
            if !name.is_empty() {
                return Ok(name.to_owned());
            }
        }
    }
    for name in ["main", "master"] {
        if remote_branch_exists(repo, name).await? {
            return Ok(name.to_owned());
        }
    }
    git(repo, &["rev-parse", "--git-dir"], LOCAL_TIMEOUT).await?;
    Err(GitError::new(
        "base_branch_not_found",
        format!(
            "cannot tell the default branch of {}: origin has no HEAD, main or master (is the \
             remote named origin, and was it fetched?)",
            repo.display()
        ),
    ))
}

/// Whether `refs/remotes/origin/<name>` is a commit.
async fn remote_branch_exists(repo: &Path, name: &str) -> Result<bool, GitError> {
    let rev = format!("refs/remotes/origin/{name}^{{commit}}");
    let done = git_status(repo, &["rev-parse", "--verify", "--quiet", &rev], LOCAL_TIMEOUT).await?;
    Ok(done.code == Some(0))
}

/// Refuses a branch name git would not take, or that could be read as an option.
async fn check_branch(repo: &Path, what: &str, name: &str) -> Result<(), GitError> {
    let bad = || {
        GitError::new(
            "checkout_failed",
            format!("{what} {name:?} is not a valid branch name"),
        )
    };
    if name.is_empty() || name.starts_with('-') {
        return Err(bad());
    }
    let full = format!("refs/heads/{name}");
    let done = git_status(repo, &["check-ref-format", &full], LOCAL_TIMEOUT).await?;
    if done.code == Some(0) {
        Ok(())
    } else {
        Err(bad())
    }
}

/// The task's branch, made at accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The branch now checked out.
    pub branch: String,
    /// The origin branch it starts from (the task's `branch`, else the default branch).
    pub base_branch: String,
    /// The commit it starts from (short hash).
    pub base_commit: String,
    /// Set when origin could not be fetched: the branch starts from origin as last fetched.
    pub warning: Option<String>,
}

/// Makes `branch` from `origin/<base>` (`base`: the task's `branch`, else the default branch)
/// and checks it out. A working tree with uncommitted changes is `dirty_working_tree` (naming
/// the files); a failed fetch only sets [`Started::warning`].
pub async fn start_branch(repo: &Path, branch: &str, base: Option<&str>) -> Result<Started, GitError> {
    let status = git(repo, &["status", "--porcelain"], LOCAL_TIMEOUT).await?;
    let dirty: Vec<&str> = status.lines().filter(|l| l.len() > 3).map(|l| &l[3..]).collect();
    if !dirty.is_empty() {
        let mut files = dirty.iter().take(20).copied().collect::<Vec<_>>().join(", ");
        if dirty.len() > 20 {
            files.push_str(&format!(" and {} more", dirty.len() - 20));
        }
        return Err(GitError::new(
            "dirty_working_tree",
            format!(
                "{} has uncommitted changes ({files}): commit, stash or remove them, so that the \
                 task's branch holds only the task's work",
                repo.display()
            ),
        ));
    }
    let warning = match git(repo, &["fetch", "--prune", "origin"], NETWORK_TIMEOUT).await {
        Ok(_) => None,
        Err(e) => Some(format!(
            "could not fetch origin in {} ({}); the branch starts from origin as last fetched",
            repo.display(),
            e.step("fetch_failed")
        )),
    };
    let base_branch = match base.map(str::trim).filter(|b| !b.is_empty()) {
        Some(b) => b.to_owned(),
        None => default_branch(repo).await?,
    };
    check_branch(repo, "the task's base branch", &base_branch).await?;
    check_branch(repo, "the branch", branch).await?;
    if !remote_branch_exists(repo, &base_branch).await? {
        return Err(GitError::new(
            "base_branch_not_found",
            format!(
                "the base branch {base_branch:?} is not on origin (as fetched in {}): the task \
                 names a branch the repository does not have",
                repo.display()
            ),
        ));
    }
    let start = format!("refs/remotes/origin/{base_branch}");
    git(
        repo,
        &["checkout", "--quiet", "--no-track", "-B", branch, &start],
        LOCAL_TIMEOUT,
    )
    .await
    .map_err(|e| e.step("checkout_failed"))?;
    let base_commit = git(repo, &["rev-parse", "--short", "HEAD"], LOCAL_TIMEOUT).await?;
    Ok(Started {
        branch: branch.to_owned(),
        base_branch,
        base_commit: base_commit.trim().to_owned(),
        warning,
    })
}

/// Records in `repo`'s git config that `branch` was started for `task_id`
/// (`branch.<branch>.agentcomTask`), so that delivery commits only on a branch this very task
/// started: a branch of the same name left by an earlier task, with someone's own changes on
/// it, is never taken for this task's work.
pub async fn mark_started(repo: &Path, branch: &str, task_id: &str) -> Result<(), GitError> {
    let key = format!("branch.{branch}.agentcomTask");
    git(repo, &["config", "--local", &key, task_id], LOCAL_TIMEOUT)
        .await
        .map(drop)
        .map_err(|e| e.step("checkout_failed"))
}

/// Whether `branch` in `repo` was started for `task_id` ([`mark_started`]).
pub async fn started_for(repo: &Path, branch: &str, task_id: &str) -> bool {
    let key = format!("branch.{branch}.agentcomTask");
    match git_status(repo, &["config", "--local", "--get", &key], LOCAL_TIMEOUT).await {
        Ok(done) => done.code == Some(0) && done.stdout.trim() == task_id,
        Err(_) => false,
    }
}

/// Everything delivery needs to know about a finished, verified task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The repository (`repo_dir` or the task's workspace).
    pub repo: PathBuf,
    /// The task's branch (from [`start_branch`]).
    pub branch: String,
    /// The branch the pull request goes into.
    pub base_branch: String,
    /// The hub's task id.
    pub task_id: String,
    /// This sidecar's agent id (also the commit author when git has no identity).
    pub agent_id: String,
    /// The task's description (hub text).
    pub description: String,
    /// The task's success criteria (hub text).
    pub success_criteria: Vec<String>,
    /// One paragraph on the verification (status and checks), for the pull request.
    pub verification_summary: String,
    /// The task on the hub's HTTP API, when known.
    pub task_link: Option<String>,
    /// The GitHub CLI (`gh_command`).
    pub gh_command: String,
    /// Who is asked to review (`reviewer`).
    pub reviewer: Option<String>,
    /// The labels the pull request is opened with ([`task_labels`]).
    pub labels: Vec<Label>,
}

/// What [`commit_and_push`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// Nothing changed and nothing was committed: no push.
    Nothing,
    /// The branch was pushed: under which name, its head commit and the diff against the base.
    Branch {
        /// The name it was pushed under: the task's branch, or that name with the task id's end
        /// when origin's branch of that name holds another task's work (see [`commit_and_push`]).
        branch: String,
        /// The pushed commit (full hash).
        head: String,
        /// What changed against `origin/<base>`.
        diff: DiffMeta,
    },
}

/// The commit message for a task: the description's first line (at most 72 characters; `Task
/// <id>` when blank), a blank line, `Task: <id>`, then `extra` lines.
fn commit_message(description: &str, task_id: &str, extra: &str) -> String {
    let first = description
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let subject: String = if first.is_empty() {
        format!("Task {task_id}")
    } else {
        first.chars().take(72).collect()
    };
    format!("{}\n\nTask: {task_id}\n{extra}", subject.trim_end())
}

/// Commits everything uncommitted in `repo` (`git add -A`) with `message`, signed as `agent_id`
/// where git has no identity of its own; false when there was nothing to commit.
async fn commit_all(repo: &Path, agent_id: &str, message: &str) -> Result<bool, GitError> {
    git(repo, &["add", "-A"], LOCAL_TIMEOUT)
        .await
        .map_err(|e| e.step("commit_failed"))?;
    let staged = git_status(repo, &["diff", "--cached", "--quiet"], LOCAL_TIMEOUT).await?;
    if staged.code != Some(1) {
        return Ok(false);
    }
    let mut args = identity_args(repo, agent_id).await;
    args.extend([
        "commit".to_owned(),
        "--quiet".to_owned(),
        "--cleanup=whitespace".to_owned(),
        format!("--message={message}"),
    ]);
    git(repo, &args, NETWORK_TIMEOUT)
        .await
        .map_err(|e| e.step("commit_failed"))?;
    Ok(true)
}

/// Keeps the work of a task whose delivery is withheld: when `repo` is on the task's `branch`
/// with uncommitted changes, commits them there (never pushed) and returns the commit (short
/// hash), so that the work stays and the next task starts from a clean tree. A repository on
/// another branch, or on a branch this task did not start ([`mark_started`]), is left as it
/// is: its changes cannot be told apart from someone's own.
pub async fn keep_withheld(
    repo: &Path,
    branch: &str,
    task_id: &str,
    agent_id: &str,
    description: &str,
    why: &str,
) -> Result<Option<String>, GitError> {
    if own_branch(repo, task_id).await?.as_deref() != Some(branch) {
        return Ok(None);
    }
    let message = commit_message(description, task_id, &format!("Not pushed: {why}\n"));
    commit_kept(repo, agent_id, &message).await
}

/// Keeps what a task left in `repo` once it is over without a delivered success (it failed,
/// was cancelled or handed back): when `repo` is still on a branch this task started, with
/// uncommitted changes, commits them there (never pushed) and returns the branch and the
/// commit (short hash), so that the next task starts from a clean tree. Anything else is left
/// as it is.
pub async fn keep_left(
    repo: &Path,
    task_id: &str,
    agent_id: &str,
) -> Result<Option<(String, String)>, GitError> {
    let Some(branch) = own_branch(repo, task_id).await? else {
        return Ok(None);
    };
    let message = commit_message(
        &format!("Work left by task {task_id}"),
        task_id,
        "Not pushed: the task ended without a delivered success\n",
    );
    Ok(commit_kept(repo, agent_id, &message)
        .await?
        .map(|commit| (branch, commit)))
}

/// The branch `repo` is on, when it is one task `task_id` started ([`mark_started`]).
async fn own_branch(repo: &Path, task_id: &str) -> Result<Option<String>, GitError> {
    let current = git_status(
        repo,
        &["symbolic-ref", "--quiet", "--short", "HEAD"],
        LOCAL_TIMEOUT,
    )
    .await?;
    let branch = current.stdout.trim();
    if current.code != Some(0) || branch.is_empty() || !started_for(repo, branch, task_id).await {
        return Ok(None);
    }
    Ok(Some(branch.to_owned()))
}

/// Commits everything uncommitted in `repo` with `message` ([`commit_all`]) and returns the
/// commit's short hash; None when there was nothing to commit.
async fn commit_kept(repo: &Path, agent_id: &str, message: &str) -> Result<Option<String>, GitError> {
    if !commit_all(repo, agent_id, message).await? {
        return Ok(None);
    }
    let head = git(repo, &["rev-parse", "--short", "HEAD"], LOCAL_TIMEOUT).await?;
    Ok(Some(head.trim().to_owned()))
}

/// `-c user.name=… -c user.email=…` for what git has no identity for (from `agent_id`).
async fn identity_args(repo: &Path, agent_id: &str) -> Vec<String> {
    let mut args = Vec::new();
    let agent = ref_safe_agent(agent_id);
    for (key, value) in [
        ("user.name", agent_id.to_owned()),
        ("user.email", format!("{agent}@agentcom.invalid")),
    ] {
        let set = git(repo, &["config", "--get", key], LOCAL_TIMEOUT)
            .await
            .is_ok_and(|v| !v.trim().is_empty());
        if !set {
            args.push("-c".to_owned());
            args.push(format!("{key}={value}"));
        }
    }
    args
}

/// Puts the repository on `branch`: checks it out if the agent moved away (carrying the
/// uncommitted work), creates it from HEAD if it is gone.
async fn be_on(repo: &Path, branch: &str) -> Result<(), GitError> {
    check_branch(repo, "the task's branch", branch).await?;
    let current = git_status(
        repo,
        &["symbolic-ref", "--quiet", "--short", "HEAD"],
        LOCAL_TIMEOUT,
    )
    .await?;
    if current.code == Some(0) && current.stdout.trim() == branch {
        return Ok(());
    }
    let local = format!("refs/heads/{branch}");
    let exists = git_status(repo, &["rev-parse", "--verify", "--quiet", &local], LOCAL_TIMEOUT)
        .await?
        .code
        == Some(0);
    let args: &[&str] = if exists {
        &["checkout", "--quiet", branch]
    } else {
        &["checkout", "--quiet", "-b", branch]
    };
    git(repo, args, LOCAL_TIMEOUT)
        .await
        .map_err(|e| e.step("checkout_failed"))?;
    Ok(())
}

/// Commits what the agent left uncommitted on `d.branch` and pushes the branch
/// (`--force-with-lease`) when it holds commits beyond `origin/<base>`; [`Pushed::Nothing`]
/// (and no push) when it holds none.
pub async fn commit_and_push(d: &Delivery) -> Result<Pushed, GitError> {
    let repo = d.repo.as_path();
    be_on(repo, &d.branch).await?;
    commit_all(repo, &d.agent_id, &commit_message(&d.description, &d.task_id, "")).await?;
    if !remote_branch_exists(repo, &d.base_branch).await? {
        return Err(GitError::new(
            "base_branch_not_found",
            format!(
                "origin/{} is not in {}: nothing to compare the branch with",
                d.base_branch,
                repo.display()
            ),
        ));
    }
    let range = format!("refs/remotes/origin/{}..HEAD", d.base_branch);
    let count = git(repo, &["rev-list", "--count", &range], LOCAL_TIMEOUT).await?;
    if count.trim() == "0" {
        return Ok(Pushed::Nothing);
    }
    let head = git(repo, &["rev-parse", "HEAD"], LOCAL_TIMEOUT)
        .await?
        .trim()
        .to_owned();
    let diff = diff_meta(repo, &d.base_branch).await?;
    let branch = push_target(repo, &d.branch, &d.base_branch, &d.task_id).await?;
    let dst = format!("HEAD:refs/heads/{branch}");
    git(
        repo,
        &["push", "--quiet", "--force-with-lease", "origin", &dst],
        NETWORK_TIMEOUT,
    )
    .await
    .map_err(|e| e.step("push_failed"))?;
    Ok(Pushed::Branch { branch, head, diff })
}

/// The name to push under: `branch`, unless origin's `branch` holds commits HEAD does not and
/// none of them is this task's (`Task: <id>`; another task with the same description pushed
/// there before): then `<branch>-<end of the task id>`, so that a push never replaces another
/// task's work. The choice depends only on what origin holds, so delivering the same task again
/// (after a restart) picks the same name.
async fn push_target(repo: &Path, branch: &str, base: &str, task_id: &str) -> Result<String, GitError> {
    if !remote_branch_exists(repo, branch).await? {
        return Ok(branch.to_owned());
    }
    let theirs = format!("refs/remotes/origin/{branch}");
    let contained = git_status(
        repo,
        &["merge-base", "--is-ancestor", &theirs, "HEAD"],
        LOCAL_TIMEOUT,
    )
    .await?;
    if contained.code == Some(0) {
        return Ok(branch.to_owned());
    }
    // This task's own earlier run (reassigned by the hub, same id): its work may be replaced.
    let range = format!("refs/remotes/origin/{base}..{theirs}");
    let log = git(
        repo,
        &["log", "--max-count=100", "--format=%B", &range],
        LOCAL_TIMEOUT,
    )
    .await?;
    let ours = format!("Task: {task_id}");
    if log.lines().any(|l| l.trim() == ours) {
        return Ok(branch.to_owned());
    }
    Ok(format!("{branch}-{}", task_suffix(task_id)))
}

/// The last 8 ref-safe characters of a task id (`task-7768415c60657e08` -> `60657e08`).
fn task_suffix(task_id: &str) -> String {
    let safe: Vec<char> = task_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    match safe.len() {
        0 => "task".to_owned(),
        n => safe[n.saturating_sub(8)..].iter().collect(),
    }
}

#[cfg(test)]
#[path = "tests/pr_unit.rs"]
mod tests;
