//! Labels on the pull request, the ones Node's `agentcom-git.js` puts there (`agent:<id>`,
//! `priority:<p>`, and `risk:tier-<n>` once the hub has classified the change), so that
//! GitHub filters and auto-merge rules keyed on them keep working. A label is created on the
//! repository only when gh says it is missing (Node ran `gh label create --force` for each, on
//! every task), and a label that cannot be added never costs the pull request.

use super::gh::{gh, Finished};
use super::Delivery;
use crate::deliver::git::GitError;
use std::time::Duration;

/// One label: its name, and the colour and description it gets when it must be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// The label's name (`agent:<id>`, `priority:<p>`, `risk:tier-<n>`).
    pub name: String,
    /// Its colour when created (six hex digits).
    pub color: &'static str,
    /// Its description when created.
    pub description: String,
}

/// The longest priority kept in a label name (the submitter's free text otherwise).
const PRIORITY_MAX: usize = 20;

/// The labels a task's pull request is opened with: `agent:<agent_id>` and
/// `priority:<metadata.priority>` (`normal` when the task names none, or one that is not a
/// short lower-case word: the submitter's free text is not made a label).
pub fn task_labels(agent_id: &str, priority: Option<&str>) -> Vec<Label> {
    let priority = priority
        .map(str::trim)
        .filter(|p| {
            !p.is_empty()
                && p.len() <= PRIORITY_MAX
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
        .unwrap_or("normal");
    vec![
        Label {
            name: format!("agent:{agent_id}"),
            color: "1d76db",
            description: format!("Opened by agentcom-sidecar for the agent {agent_id}"),
        },
        Label {
            name: format!("priority:{priority}"),
            color: "c5def5",
            description: "The AgentCom task's priority".to_owned(),
        },
    ]
}

/// The label for the hub's risk tier (1 auto-merge candidate, 2 review required, 3 escalate);
/// none for another tier.
pub fn risk_label(tier: u64) -> Option<Label> {
    let (color, what) = match tier {
        1 => ("0e8a16", "auto-merge candidate"),
        2 => ("fbca04", "review required"),
        3 => ("d93f0b", "escalate"),
        _ => return None,
    };
    Some(Label {
        name: format!("risk:tier-{tier}"),
        color,
        description: format!("AgentCom risk tier {tier}: {what}"),
    })
}

/// Whether gh failed because a label does not exist on the repository (gh: "could not add
/// label: 'x' not found").
pub(super) fn missing_label(done: &Finished) -> bool {
    let err = done.stderr.to_ascii_lowercase();
    done.code != Some(0) && err.contains("label") && err.contains("not found")
}

/// Creates `labels` on the repository (`gh label create NAME --color C --description D`);
/// one that already exists is fine. The first failure, for the result.
pub(super) async fn create(d: &Delivery, labels: &[Label], timeout: Duration) -> Option<String> {
    let mut first = None;
    for label in labels {
        let args = [
            "label".to_owned(),
            "create".to_owned(),
            label.name.clone(),
            format!("--color={}", label.color),
            format!("--description={}", label.description),
        ];
        let failed = match gh(d, &args, timeout).await {
            Ok(done) if done.code == Some(0) || done.stderr.contains("already exists") => None,
            Ok(done) => Some(format!(
                "{} label create {} exited with code {:?}: {}",
                d.gh_command,
                label.name,
                done.code,
                done.stderr.trim()
            )),
            Err(e) => Some(e.to_string()),
        };
        if first.is_none() {
            first = failed;
        }
    }
    first
}

/// Adds `label` to the pull request at `url` (`gh pr edit URL --add-label NAME`), creating the
/// label first when gh says it is missing.
pub async fn add_label(d: &Delivery, url: &str, label: &Label, timeout: Duration) -> Result<(), GitError> {
    let args = [
        "pr".to_owned(),
        "edit".to_owned(),
        url.to_owned(),
        format!("--add-label={}", label.name),
    ];
    let mut done = gh(d, &args, timeout).await?;
    if missing_label(&done) {
        if let Some(e) = create(d, std::slice::from_ref(label), timeout).await {
            return Err(GitError::new("label_failed", e));
        }
        done = gh(d, &args, timeout).await?;
    }
    if done.code == Some(0) {
        Ok(())
    } else {
        Err(GitError::new(
            "label_failed",
            format!(
                "{} pr edit --add-label={} exited with code {:?}: {}",
                d.gh_command,
                label.name,
                done.code,
                done.stderr.trim()
            ),
        ))
    }
}
