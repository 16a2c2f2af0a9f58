//! The task's branch at accept; commit, push and the pull request after verification (§11.9).
//!
//! Unlike Node's `agentcom-git.js`, nothing here goes through a shell: the branch name, the
//! commit message, the title and the body are single argv elements or files outside the
//! repository, so a description full of shell syntax is only text. The branch starts from the
//! task's `branch` when it names one (Node always used `origin/main`), and the sidecar commits
//! what the agent left uncommitted (Node pushed only the agent's own commits).

use super::git::{git, git_status, human, run_program, GitError, RunFailure, TempFile};
use super::git::{LOCAL_TIMEOUT, NETWORK_TIMEOUT};
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long `gh pr create` (and `gh pr view`) may take.
pub const GH_TIMEOUT: Duration = NETWORK_TIMEOUT;

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
}

/// What [`commit_and_push`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// Nothing changed and nothing was committed: no push.
    Nothing,
    /// The branch was pushed: its head commit and the diff against the base.
    Branch {
        /// The pushed commit (full hash).
        head: String,
        /// What changed against `origin/<base>`.
        diff: DiffMeta,
    },
}

/// The commit message for `d`: the description's first line (at most 72 characters; `Task
/// <id>` when blank), a blank line, `Task: <id>`.
fn commit_message(d: &Delivery) -> String {
    let first = d
        .description
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let subject: String = if first.is_empty() {
        format!("Task {}", d.task_id)
    } else {
        first.chars().take(72).collect()
    };
    format!("{}\n\nTask: {}\n", subject.trim_end(), d.task_id)
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
    git(repo, &["add", "-A"], LOCAL_TIMEOUT)
        .await
        .map_err(|e| e.step("commit_failed"))?;
    let staged = git_status(repo, &["diff", "--cached", "--quiet"], LOCAL_TIMEOUT).await?;
    if staged.code == Some(1) {
        let mut args = identity_args(repo, &d.agent_id).await;
        args.extend([
            "commit".to_owned(),
            "--quiet".to_owned(),
            "--cleanup=whitespace".to_owned(),
            format!("--message={}", commit_message(d)),
        ]);
        git(repo, &args, NETWORK_TIMEOUT)
            .await
            .map_err(|e| e.step("commit_failed"))?;
    }
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
    let dst = format!("HEAD:refs/heads/{}", d.branch);
    git(
        repo,
        &["push", "--quiet", "--force-with-lease", "origin", &dst],
        NETWORK_TIMEOUT,
    )
    .await
    .map_err(|e| e.step("push_failed"))?;
    let head = git(repo, &["rev-parse", "HEAD"], LOCAL_TIMEOUT)
        .await?
        .trim()
        .to_owned();
    let diff = diff_meta(repo, &d.base_branch).await?;
    Ok(Pushed::Branch { head, diff })
}

/// What a branch changed, as the hub's `/classify` wants it (§11.9).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffMeta {
    /// Lines added (binary files count none).
    pub lines_added: u64,
    /// Lines deleted.
    pub lines_deleted: u64,
    /// Every path the branch touched.
    pub files_changed: Vec<String>,
    /// The paths it created.
    pub files_added: Vec<String>,
    /// Whether the change has tests (see [`diff_meta`]).
    pub tests_exist: bool,
}

impl DiffMeta {
    /// The body of `POST /api/tasks/:id/classify`.
    pub fn to_value(&self) -> Value {
        json!({
            "lines_added": self.lines_added,
            "lines_deleted": self.lines_deleted,
            "files_changed": self.files_changed,
            "files_added": self.files_added,
            "tests_exist": self.tests_exist,
        })
    }
}

/// The diff of `HEAD` against `origin/<base>` (from their merge base): line counts, changed
/// and added files, and whether tests exist: a changed `lib/X.ex` with a `test/X_test.exs`
/// (Node's Elixir rule), or any changed file under a `test`, `tests`, `spec` or `__tests__`
/// folder or named `*_test.*`, `*.test.*`, `test_*.*`, `*_spec.*` or `*.spec.*`.
pub async fn diff_meta(repo: &Path, base_branch: &str) -> Result<DiffMeta, GitError> {
    let range = format!("refs/remotes/origin/{base_branch}...HEAD");
    let numstat = git(
        repo,
        &["diff", "--no-renames", "--numstat", "-z", &range],
        LOCAL_TIMEOUT,
    )
    .await?;
    let names = git(
        repo,
        &["diff", "--no-renames", "--name-status", "-z", &range],
        LOCAL_TIMEOUT,
    )
    .await?;
    let mut meta = DiffMeta::default();
    for record in numstat.split('\0').filter(|r| !r.is_empty()) {
        let mut fields = record.splitn(3, '\t');
        meta.lines_added += fields.next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        meta.lines_deleted += fields.next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    }
    let mut fields = names.split('\0');
    while let (Some(status), Some(path)) = (fields.next(), fields.next()) {
        if status.is_empty() {
            break;
        }
        if status.starts_with('A') {
            meta.files_added.push(path.to_owned());
        }
        meta.files_changed.push(path.to_owned());
    }
    meta.tests_exist = meta
        .files_changed
        .iter()
        .any(|p| is_test_path(p) || has_elixir_test(repo, p));
    Ok(meta)
}

/// Whether `path` is a test by its folder or its name.
fn is_test_path(path: &str) -> bool {
    let mut parts: Vec<&str> = path.split('/').collect();
    let name = parts.pop().unwrap_or("");
    if parts
        .iter()
        .any(|p| matches!(*p, "test" | "tests" | "spec" | "__tests__"))
    {
        return true;
    }
    let Some((stem, _ext)) = name.split_once('.') else {
        return false;
    };
    stem.starts_with("test_")
        || name.contains("_test.")
        || name.contains(".test.")
        || name.contains("_spec.")
        || name.contains(".spec.")
}

/// Node's rule: `lib/X.ex` changed and `test/X_test.exs` exists.
fn has_elixir_test(repo: &Path, path: &str) -> bool {
    let Some(rest) = path.strip_prefix("lib/").and_then(|p| p.strip_suffix(".ex")) else {
        return false;
    };
    repo.join(format!("test/{rest}_test.exs")).is_file()
}

/// The pull request's title: the description's first line, cut to 57 characters and `...`
/// when longer than 60 (as Node); `Agent task` when blank.
pub fn pr_title(description: &str) -> String {
    let first = description
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if first.is_empty() {
        return "Agent task".to_owned();
    }
    if first.chars().count() > 60 {
        format!("{}...", first.chars().take(57).collect::<String>())
    } else {
        first.to_owned()
    }
}

/// The pull request's body (markdown): task, agent, link, description, success criteria,
/// verification and changed files. It goes to gh as a file: hub text in it is only text.
pub fn pr_body(d: &Delivery, diff: &DiffMeta) -> String {
    let mut b = format!("## Task {}\n\n**Agent:** {}\n", d.task_id, d.agent_id);
    if let Some(link) = &d.task_link {
        b.push_str(&format!("**Task link:** {link}\n"));
    }
    b.push_str(&format!("**Branch:** `{}` into `{}`\n", d.branch, d.base_branch));
    b.push_str(&format!("\n### Description\n\n{}\n", d.description.trim()));
    if !d.success_criteria.is_empty() {
        b.push_str("\n### Success criteria\n\n");
        for c in &d.success_criteria {
            b.push_str(&format!("- {}\n", c.trim()));
        }
    }
    let summary = d.verification_summary.trim();
    b.push_str(&format!(
        "\n### Verification\n\n{}\n",
        if summary.is_empty() {
            "No verification ran."
        } else {
            summary
        }
    ));
    b.push_str(&format!(
        "\n### Changes\n\n{} file(s), +{} -{}\n\n",
        diff.files_changed.len(),
        diff.lines_added,
        diff.lines_deleted
    ));
    for f in diff.files_changed.iter().take(100) {
        let added = if diff.files_added.contains(f) {
            " (new)"
        } else {
            ""
        };
        b.push_str(&format!("- `{}`{added}\n", f.replace('`', "'")));
    }
    if diff.files_changed.len() > 100 {
        b.push_str(&format!("- ... and {} more\n", diff.files_changed.len() - 100));
    }
    b.push_str("\n---\nOpened by agentcom-sidecar.\n");
    b
}

/// `--name value`, or `--name=value` when the value could be read as an option.
fn flag(args: &mut Vec<String>, name: &str, value: &str) {
    if value.starts_with('-') {
        args.push(format!("{name}={value}"));
    } else {
        args.push(name.to_owned());
        args.push(value.to_owned());
    }
}

/// The environment gh runs with: no prompts, no update check, git without prompts.
const GH_ENV: [(&str, &str); 4] = [
    ("GH_PROMPT_DISABLED", "1"),
    ("GH_NO_UPDATE_NOTIFIER", "1"),
    ("GIT_TERMINAL_PROMPT", "0"),
    ("LC_ALL", "C"),
];

/// Opens the pull request with `gh pr create` (arguments as a vector, the body as a file in the
/// temp folder, 120 s) in `d.repo` and returns its URL. When one already exists for the branch
/// (a delivery repeated after a restart), its URL (from gh's message, else `gh pr view`).
pub async fn open_pr(d: &Delivery, diff: &DiffMeta) -> Result<String, GitError> {
    open_pr_within(d, diff, GH_TIMEOUT).await
}

/// [`open_pr`] with each gh call limited to `timeout` instead of [`GH_TIMEOUT`].
pub async fn open_pr_within(d: &Delivery, diff: &DiffMeta, timeout: Duration) -> Result<String, GitError> {
    let body = TempFile::new("pr-body", &pr_body(d, diff)).map_err(|e| {
        GitError::new(
            "pr_create_failed",
            format!("cannot write the pull request body to the temp folder: {e}"),
        )
    })?;
    let mut args = vec!["pr".to_owned(), "create".to_owned()];
    flag(&mut args, "--base", &d.base_branch);
    flag(&mut args, "--head", &d.branch);
    flag(&mut args, "--title", &pr_title(&d.description));
    args.push(format!("--body-file={}", body.path().display()));
    if let Some(r) = d.reviewer.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
        flag(&mut args, "--reviewer", r);
    }
    let done = gh(d, &args, timeout).await?;
    if done.code == Some(0) {
        return last_url(&done.stdout).ok_or_else(|| {
            GitError::new(
                "pr_create_failed",
                format!(
                    "{} pr create printed no pull request URL: {}",
                    d.gh_command,
                    done.stdout.trim()
                ),
            )
        });
    }
    if done.stderr.contains("already exists") {
        if let Some(url) = last_url(&done.stderr) {
            return Ok(url);
        }
        let view = ["pr", "view", &d.branch, "--json", "url", "--jq", ".url"].map(str::to_owned);
        let viewed = gh(d, &view, timeout).await?;
        if viewed.code == Some(0) {
            if let Some(url) = last_url(&viewed.stdout) {
                return Ok(url);
            }
        }
    }
    let why = done.stderr.trim();
    Err(GitError::new(
        "pr_create_failed",
        if why.is_empty() {
            format!("{} pr create exited with code {:?}", d.gh_command, done.code)
        } else {
            crate::exec::shell::tail_chars(why, 2000).to_owned()
        },
    ))
}

/// Runs `<gh_command> args…` in `d.repo` with [`GH_ENV`], killed after `timeout`.
async fn gh(d: &Delivery, args: &[String], timeout: Duration) -> Result<super::git::Finished, GitError> {
    let argv: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let program = OsStr::new(&d.gh_command);
    match run_program(program, &d.repo, &argv, &GH_ENV, timeout).await {
        Ok(done) => Ok(done),
        Err(RunFailure::Spawn(e)) if e.kind() == std::io::ErrorKind::NotFound && d.repo.is_dir() => {
            Err(GitError::new(
                "gh_not_found",
                format!(
                    "cannot run {:?}: not found. Install the GitHub CLI (https://cli.github.com) \
                     and log in (gh auth login), or set gh_command in config.json to its path",
                    d.gh_command
                ),
            ))
        }
        Err(RunFailure::Spawn(e)) => Err(GitError::new(
            "pr_create_failed",
            format!("cannot run {:?} in {}: {e}", d.gh_command, d.repo.display()),
        )),
        Err(RunFailure::Timeout) => Err(GitError::new(
            "timeout",
            format!(
                "{} {} took longer than {} and was killed with its process group",
                d.gh_command,
                args.iter().take(2).cloned().collect::<Vec<_>>().join(" "),
                human(timeout)
            ),
        )),
        Err(RunFailure::Wait(e)) => Err(GitError::new(
            "pr_create_failed",
            format!("cannot wait for {}: {e}", d.gh_command),
        )),
    }
}

/// The last line of `text` that looks like a URL (`http://` or `https://`, no white space).
fn last_url(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .filter_map(|l| {
            let l = l.trim();
            let start = l.find("https://").or_else(|| l.find("http://"))?;
            let url = l[start..].split_whitespace().next()?;
            Some(url.trim_end_matches(['.', ',', ')']).to_owned())
        })
        .next()
}

#[cfg(test)]
#[path = "tests/pr_unit.rs"]
mod tests;
