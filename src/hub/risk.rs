//! The real hub's risk classifier (`risk_classifier.ex`) behind `POST /api/tasks/:id/classify`,
//! free of I/O: a task's complexity and stored verification report plus the diff's metadata
//! give a tier (1 auto-merge candidate, 2 review, 3 escalate) and its reasons (§11.9).

use serde_json::{json, Value};

/// Substrings of a changed path that make a change tier 3 (the hub's protected and auth paths).
pub const PROTECTED: [&str; 12] = [
    "config/",
    "rel/",
    ".github/",
    "Dockerfile",
    "docker-compose",
    "mix.exs",
    "mix.lock",
    "lib/agent_com/auth",
    "lib/agent_com/plugs/require_auth",
    "priv/cert",
    "priv/key",
    ".env",
];

/// Tier 1 needs fewer changed lines than this...
const MAX_LINES: i64 = 20;
/// ...and at most this many changed files.
const MAX_FILES: usize = 3;

/// The diff metadata the sidecar sends (`{lines_added, lines_deleted, files_changed,
/// files_added, tests_exist}`); missing fields are 0, `[]` and false.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Diff {
    /// Lines added.
    pub lines_added: i64,
    /// Lines deleted.
    pub lines_deleted: i64,
    /// Every changed path.
    pub files_changed: Vec<String>,
    /// The paths the diff adds.
    pub files_added: Vec<String>,
    /// Whether tests cover the change.
    pub tests_exist: bool,
}

/// Whether a stored verification report counts as passed: none at all, or a status of
/// `pass`, `auto_pass` or `skip`.
pub fn verification_passed(report: Option<&Value>) -> bool {
    match report {
        None | Some(Value::Null) => true,
        Some(r) => matches!(
            r.get("status").and_then(Value::as_str),
            Some("pass" | "auto_pass" | "skip")
        ),
    }
}

/// The classification `{tier, reasons, auto_merge_eligible}` of a task whose effective tier
/// is `complexity_tier` (None counts as `unknown`), whose stored report is `report`.
pub fn classify(
    complexity_tier: Option<&str>,
    report: Option<&Value>,
    diff: &Diff,
    auto_merge_tier1: bool,
) -> Value {
    let tier_name = complexity_tier.unwrap_or("unknown");
    let lines = diff.lines_added.saturating_add(diff.lines_deleted);
    let files = diff.files_changed.len();
    let new_files = diff.files_added.len();
    let passed = verification_passed(report);
    let protected: Vec<&str> = diff
        .files_changed
        .iter()
        .filter(|f| PROTECTED.iter().any(|p| f.contains(p)))
        .map(String::as_str)
        .collect();
    let allowed = matches!(tier_name, "trivial" | "standard");
    let (tier, reasons): (u8, Vec<String>) = if !protected.is_empty() || !passed {
        let mut reasons = Vec::new();
        if !protected.is_empty() {
            reasons.push(format!("protected paths: {}", protected.join(", ")));
        }
        if !passed {
            reasons.push("verification failed".to_string());
        }
        (3, reasons)
    } else if allowed && lines < MAX_LINES && files <= MAX_FILES && new_files == 0 && diff.tests_exist {
        let reasons = vec![
            format!("complexity: {tier_name}"),
            format!("lines: {lines}"),
            format!("files: {files}"),
            "new files: 0".to_string(),
            "tests: present".to_string(),
            "verification: passed".to_string(),
        ];
        (1, reasons)
    } else {
        let mut reasons = Vec::new();
        if !allowed {
            reasons.push(format!("complexity: {tier_name}"));
        }
        if lines >= MAX_LINES {
            reasons.push(format!("lines: {lines} (>={MAX_LINES})"));
        }
        if files > MAX_FILES {
            reasons.push(format!("files: {files} (>{MAX_FILES})"));
        }
        if new_files > 0 {
            reasons.push(format!("new files: {new_files}"));
        }
        if !diff.tests_exist {
            reasons.push("no test coverage".to_string());
        }
        if reasons.is_empty() {
            reasons.push("default tier for review".to_string());
        }
        (2, reasons)
    };
    json!({"tier": tier, "reasons": reasons, "auto_merge_eligible": tier == 1 && auto_merge_tier1})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(lines: (i64, i64), changed: &[&str], added: &[&str], tests: bool) -> Diff {
        Diff {
            lines_added: lines.0,
            lines_deleted: lines.1,
            files_changed: changed.iter().map(|s| s.to_string()).collect(),
            files_added: added.iter().map(|s| s.to_string()).collect(),
            tests_exist: tests,
        }
    }

    #[test]
    fn tier_one_needs_every_criterion_and_auto_merge_needs_the_flag() {
        let small = diff((5, 2), &["lib/x.ex"], &[], true);
        let c = classify(Some("trivial"), None, &small, false);
        assert_eq!(c["tier"], 1);
        assert_eq!(c["reasons"][0], "complexity: trivial");
        assert_eq!(c["auto_merge_eligible"], false);
        assert_eq!(
            classify(Some("standard"), None, &small, true)["auto_merge_eligible"],
            true
        );
        // 19 lines is small, 20 is not.
        let edge = diff((19, 0), &["a", "b", "c"], &[], true);
        assert_eq!(classify(Some("standard"), None, &edge, false)["tier"], 1);
        let c = classify(Some("standard"), None, &diff((20, 0), &["a"], &[], true), false);
        assert_eq!(c["reasons"], json!(["lines: 20 (>=20)"]));
    }

    #[test]
    fn tier_two_names_the_failed_criteria() {
        let c = classify(Some("complex"), None, &diff((1, 0), &["a"], &[], true), false);
        assert_eq!(
            c,
            json!({"tier": 2, "reasons": ["complexity: complex"], "auto_merge_eligible": false})
        );
        let c = classify(None, None, &Diff::default(), false);
        assert_eq!(c["reasons"], json!(["complexity: unknown", "no test coverage"]));
    }

    #[test]
    fn tier_three_for_protected_paths_and_failed_verification() {
        let report = json!({"status": "fail"});
        let c = classify(
            Some("standard"),
            Some(&report),
            &diff((1, 0), &[".env.local", "lib/a.ex", "Dockerfile"], &[], true),
            true,
        );
        assert_eq!(c["tier"], 3);
        assert_eq!(
            c["reasons"],
            json!(["protected paths: .env.local, Dockerfile", "verification failed"])
        );
        assert_eq!(c["auto_merge_eligible"], false);
        for ok in ["pass", "auto_pass", "skip"] {
            assert!(verification_passed(Some(&json!({"status": ok}))));
        }
        for bad in [
            json!({"status": "error"}),
            json!({"status": "timeout"}),
            json!({}),
        ] {
            assert!(!verification_passed(Some(&bad)));
        }
    }
}
