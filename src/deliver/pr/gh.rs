//! The pull request: title, body and `gh pr create` as an argument vector (§11.9).

use super::labels::{self, Label};
use super::{Delivery, DiffMeta};
pub(super) use crate::deliver::git::Finished;
use crate::deliver::git::{human, run_program, GitError, RunFailure, TempFile, NETWORK_TIMEOUT};
use std::ffi::OsStr;
use std::time::Duration;

/// How long `gh pr create` (and `gh pr view`) may take.
pub const GH_TIMEOUT: Duration = NETWORK_TIMEOUT;

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
pub(super) fn flag(args: &mut Vec<String>, name: &str, value: &str) {
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

/// An opened (or found) pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Its URL.
    pub url: String,
    /// The labels it was opened with (none when it already existed, or when they could not be
    /// added: then [`Opened::label_error`] says why).
    pub labels: Vec<String>,
    /// Why the labels could not be added, when they could not.
    pub label_error: Option<String>,
}

/// Opens the pull request with `gh pr create` (arguments as a vector, the body as a file in the
/// temp folder, 120 s) in `d.repo`, with `d.labels` (created when missing; left off when they
/// cannot be), and returns it. When one already exists for the branch (a delivery repeated
/// after a restart), its URL (from gh's message, else `gh pr view`).
pub async fn open_pr(d: &Delivery, diff: &DiffMeta) -> Result<Opened, GitError> {
    open_pr_within(d, diff, GH_TIMEOUT).await
}

/// [`open_pr`] with each gh call limited to `timeout` instead of [`GH_TIMEOUT`].
pub async fn open_pr_within(d: &Delivery, diff: &DiffMeta, timeout: Duration) -> Result<Opened, GitError> {
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
    let create = |labels: &[Label]| {
        let mut args = args.clone();
        args.extend(labels.iter().map(|l| format!("--label={}", l.name)));
        args
    };
    let mut labels = d.labels.clone();
    let mut label_error = None;
    let mut done = gh(d, &create(&labels), timeout).await?;
    if !labels.is_empty() && labels::missing_label(&done) {
        label_error = labels::create(d, &labels, timeout).await;
        done = gh(d, &create(&labels), timeout).await?;
        if labels::missing_label(&done) {
            let why = label_error
                .take()
                .unwrap_or_else(|| done.stderr.trim().to_owned());
            label_error = Some(format!("opened without labels: {why}"));
            labels.clear();
            done = gh(d, &create(&labels), timeout).await?;
        }
    }
    let opened = |url| Opened {
        url,
        labels: labels.iter().map(|l| l.name.clone()).collect(),
        label_error: label_error.clone(),
    };
    if done.code == Some(0) {
        return last_url(&done.stdout).map(opened).ok_or_else(|| {
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
    let found = |url| Opened {
        url,
        labels: Vec::new(),
        label_error: None,
    };
    if done.stderr.contains("already exists") {
        if let Some(url) = last_url(&done.stderr) {
            return Ok(found(url));
        }
        let view = ["pr", "view", &d.branch, "--json", "url", "--jq", ".url"].map(str::to_owned);
        let viewed = gh(d, &view, timeout).await?;
        if viewed.code == Some(0) {
            if let Some(url) = last_url(&viewed.stdout) {
                return Ok(found(url));
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
pub(super) async fn gh(d: &Delivery, args: &[String], timeout: Duration) -> Result<Finished, GitError> {
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
pub(super) fn last_url(text: &str) -> Option<String> {
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
