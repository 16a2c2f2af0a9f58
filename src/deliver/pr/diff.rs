//! What a branch changed against its base, as the hub's `/classify` wants it (§11.9).

use crate::deliver::git::{git, GitError, LOCAL_TIMEOUT};
use serde_json::{json, Value};
use std::path::Path;

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
pub(super) fn is_test_path(path: &str) -> bool {
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
