//! The clone a task with a `repo` works in, under `workspaces_dir` (protocol §11.9).
//!
//! First use: `git clone -- <url> <temp folder beside>`, renamed into place once complete, so a
//! clone cut short (timeout, crash) leaves nothing that blocks the next one (Node's defect: a
//! half-finished folder without `.git` made every later clone fail). Later uses: fetch origin,
//! `reset --hard origin/<default branch>` and `clean -fd`; a failed fetch keeps the checkout as
//! it was, with a warning.

use super::git::{git, GitError, CLONE_TIMEOUT, LOCAL_TIMEOUT, NETWORK_TIMEOUT};
use super::pr::default_branch;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a workspace folder name may be before it is cut (and a hash of the URL added).
const MAX_SLUG: usize = 100;

/// The folder under `workspaces_dir` for `repo_url` (§11.9's slug: the URL without `http(s)://`,
/// `git@host:` and `.git`, `/` and every character outside `A-Z a-z 0-9 . _ -` as `-`). It is
/// always one plain name inside `workspaces_dir`: never empty, `.`, `..` or absolute.
pub fn workspace_path(workspaces_dir: &Path, repo_url: &str) -> PathBuf {
    workspaces_dir.join(slug(repo_url))
}

/// The folder name for `repo_url` (see [`workspace_path`]).
fn slug(repo_url: &str) -> String {
    let mut s = repo_url.trim();
    for prefix in ["https://", "http://"] {
        if let Some(rest) = s.strip_prefix(prefix) {
            s = rest;
        }
    }
    if let Some(rest) = s.strip_prefix("git@") {
        if let Some((_host, path)) = rest.split_once(':') {
            s = path;
        }
    }
    let s = s.trim_end_matches('/');
    let s = s.strip_suffix(".git").unwrap_or(s);
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    // A name made of dots only would be this folder or its parent; one starting with a dot
    // would be hidden (and could meet the temp folders of clones, which start with one).
    if out.starts_with('.') {
        out.insert(0, '_');
    }
    if out.is_empty() {
        out.push_str("repo");
    }
    if out.len() > MAX_SLUG {
        out.truncate(MAX_SLUG - 17);
        out.push_str(&format!("-{:016x}", fnv1a(repo_url.as_bytes())));
    }
    out
}

/// FNV-1a, 64 bits: a stable short name for a long URL.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A workspace ready for a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The checkout, on the default branch as origin has it.
    pub dir: PathBuf,
    /// Set when the checkout could not be brought up to date (a failed fetch): the task works
    /// on the copy as it was. Worth a log line and a note in the result.
    pub warning: Option<String>,
}

/// One workspace setup at a time in this process (the lock file keeps other processes out):
/// two tasks never clone into, or clean up, the same folder at once.
static PREPARING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Makes the workspace for `repo_url` ready: cloned on first use (300 s), else fetched (120 s),
/// reset to `origin/<default branch>` and cleaned of untracked files. A URL starting with `-` is
/// refused (it would be an option); a failed clone fails (`clone_failed`, or `timeout`) and
/// leaves nothing behind.
pub async fn prepare(workspaces_dir: &Path, repo_url: &str) -> Result<Prepared, GitError> {
    prepare_within(workspaces_dir, repo_url, CLONE_TIMEOUT).await
}

/// [`prepare`] with the clone limited to `clone_timeout` instead of [`CLONE_TIMEOUT`].
pub async fn prepare_within(
    workspaces_dir: &Path,
    repo_url: &str,
    clone_timeout: Duration,
) -> Result<Prepared, GitError> {
    let url = repo_url.trim();
    if url.is_empty() {
        return Err(GitError::new(
            "clone_failed",
            "the task's repo is empty: it names no repository to clone",
        ));
    }
    if url.starts_with('-') {
        return Err(GitError::new(
            "clone_failed",
            format!("refused the task's repo {url:?}: a repository URL cannot start with '-'"),
        ));
    }
    let _one_at_a_time = PREPARING.lock().await;
    let dir = workspace_path(workspaces_dir, url);
    if dir.join(".git").exists() {
        return update(&dir, url).await;
    }
    if dir.exists() {
        let empty = std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty {
            return Err(GitError::new(
                "not_a_git_repo",
                format!(
                    "the workspace {} for {url} exists but is not a git checkout: move it away or \
                     delete it, and the next task clones the repository again",
                    dir.display()
                ),
            ));
        }
        let _ = std::fs::remove_dir(&dir);
    }
    clone(workspaces_dir, &dir, url, clone_timeout).await?;
    Ok(Prepared { dir, warning: None })
}

/// Clones `url` into a temp folder beside `dir`, then renames it to `dir`.
async fn clone(workspaces_dir: &Path, dir: &Path, url: &str, timeout: Duration) -> Result<(), GitError> {
    std::fs::create_dir_all(workspaces_dir).map_err(|e| {
        GitError::new(
            "clone_failed",
            format!(
                "cannot create the workspaces folder {} (workspaces_dir): {e}",
                workspaces_dir.display()
            ),
        )
    })?;
    let name = dir
        .file_name()
        .unwrap_or(OsStr::new("repo"))
        .to_string_lossy()
        .into_owned();
    let prefix = format!(".{name}.clone-");
    // Clones cut short by an earlier run (killed, crashed): nobody else clones here now.
    if let Ok(entries) = std::fs::read_dir(workspaces_dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = tokio::fs::remove_dir_all(e.path()).await;
            }
        }
    }
    let tmp = workspaces_dir.join(format!(
        "{prefix}{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    let mut cleanup = RemoveOnDrop(Some(tmp.clone()));
    let args: [&OsStr; 4] = [
        OsStr::new("clone"),
        OsStr::new("--"),
        OsStr::new(url),
        tmp.as_os_str(),
    ];
    if let Err(e) = git(workspaces_dir, &args, timeout).await {
        let _ = tokio::fs::remove_dir_all(&tmp).await;
        return Err(with_context(e.step("clone_failed"), &format!("cloning {url}")));
    }
    std::fs::rename(&tmp, dir).map_err(|e| {
        GitError::new(
            "clone_failed",
            format!("cloned {url} but cannot move it to {}: {e}", dir.display()),
        )
    })?;
    cleanup.0 = None;
    Ok(())
}

/// Brings the checkout `dir` to origin's default branch: fetch, reset, clean.
async fn update(dir: &Path, url: &str) -> Result<Prepared, GitError> {
    let mut warning = None;
    // Another URL with the same folder name (§11.9's slug is not one-to-one): follow the task.
    let current = git(dir, &["config", "--get", "remote.origin.url"], LOCAL_TIMEOUT)
        .await
        .unwrap_or_default();
    if current.trim() != url {
        let args = ["remote", "set-url", "origin", url];
        if git(dir, &args, LOCAL_TIMEOUT).await.is_err() {
            git(dir, &["remote", "add", "origin", url], LOCAL_TIMEOUT)
                .await
                .map_err(|e| with_context(e.step("fetch_failed"), "setting origin"))?;
        }
    }
    if let Err(e) = git(dir, &["fetch", "--prune", "origin"], NETWORK_TIMEOUT).await {
        let e = e.step("fetch_failed");
        warning = Some(format!(
            "could not update the workspace {} from {url} ({e}); the task works on the copy as \
             it was",
            dir.display()
        ));
    }
    let base = default_branch(dir).await?;
    let target = format!("refs/remotes/origin/{base}");
    // On the default branch itself (not the last task's branch, which stays as it was pushed),
    // reset to origin's, whatever the last task left in the tree.
    let args = [
        "checkout",
        "--force",
        "--quiet",
        "--no-track",
        "-B",
        &base,
        &target,
    ];
    git(dir, &args, LOCAL_TIMEOUT)
        .await
        .map_err(|e| with_context(e.step("checkout_failed"), &format!("resetting to origin/{base}")))?;
    git(dir, &["reset", "--hard", "--quiet", &target], LOCAL_TIMEOUT)
        .await
        .map_err(|e| with_context(e.step("checkout_failed"), &format!("resetting to origin/{base}")))?;
    git(dir, &["clean", "-fd", "--quiet"], LOCAL_TIMEOUT)
        .await
        .map_err(|e| with_context(e.step("checkout_failed"), "removing untracked files"))?;
    Ok(Prepared {
        dir: dir.to_path_buf(),
        warning,
    })
}

/// `e` with the step that failed in front of git's message.
fn with_context(mut e: GitError, what: &str) -> GitError {
    e.message = format!("{what}: {}", e.message);
    e
}

/// Removes a folder when dropped (a clone whose future was dropped half-way).
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_node_and_stay_inside() {
        let w = Path::new("/w");
        let cases = [
            ("https://github.com/org/repo", "github.com-org-repo"),
            ("http://host:8080/a/b.git", "host-8080-a-b"),
            ("git@github.com:org/repo.git", "org-repo"),
            ("/srv/git/origin.git", "-srv-git-origin"),
            ("ext::sh -c touch% /tmp/x", "ext--sh--c-touch---tmp-x"),
            ("..", "_.."),
            ("../..", "_..-.."),
            ("", "repo"),
            ("https://", "repo"),
        ];
        for (url, want) in cases {
            let p = workspace_path(w, url);
            assert_eq!(p, w.join(want), "{url}");
            assert_eq!(p.parent(), Some(w), "{url}");
        }
        let long = format!("https://h/{}", "x/".repeat(200));
        let s = slug(&long);
        assert_eq!(s.len(), MAX_SLUG);
        assert_ne!(s, slug(&format!("{long}y")));
    }
}
