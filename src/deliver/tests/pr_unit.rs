//! Unit tests of pr.rs: names, messages, titles, bodies (no repository needed, except git's own
//! verdict on branch names).

use super::diff::is_test_path;
use super::gh::{flag, last_url};
use super::*;

fn valid_branch(name: &str) -> bool {
    std::process::Command::new("git")
        .args(["check-ref-format", "--branch", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn hostile_descriptions_give_harmless_valid_branches() {
    let b = branch_name(
        "gcu-sleeper-service",
        "Fix the \"login\" bug: $(id) & more!! Über-long description…",
    );
    // §11.9's slug, after the whole agent id (issue 11's rule).
    assert_eq!(b, "gcu-sleeper-service/fix-the-login-bug-id-more-ber-long-descr");
    let cases = [
        ("agent", ""),
        ("agent", "$(touch /tmp/x); `rm -rf ~`"),
        ("agent", "--upload-pack=evil"),
        ("-x", "-rf"),
        ("a..b", "..."),
        ("name.lock", "x"),
        ("we ird/agent:~^?*[\\", "@{-1}"),
        ("", "\n\t"),
        (".", "日本語だけ"),
        ("agent.lock.lock.", "a -- b"),
    ];
    for (agent, desc) in cases {
        let b = branch_name(agent, desc);
        assert!(valid_branch(&b), "{b:?} from {agent:?} / {desc:?}");
        assert!(!b.starts_with('-'), "{b:?}");
        let (a, slug) = b.split_once('/').unwrap();
        assert!(!a.is_empty() && !slug.is_empty() && !slug.contains('/'), "{b:?}");
        assert!(slug.chars().count() <= SLUG_MAX, "{b:?}");
        assert!(slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    }
    assert_eq!(branch_name("", ""), "agent/task");
    assert_eq!(branch_name("name.lock", "x"), "name-lock/x");
    assert_eq!(branch_name("a..b", "A  --  B"), "a.b/a-b");
    let long = branch_name("bot", &"word ".repeat(30));
    assert_eq!(long, format!("bot/{}", "word-".repeat(8).trim_end_matches('-')));
}

#[test]
fn titles_are_cut_like_node() {
    assert_eq!(pr_title("Fix it"), "Fix it");
    assert_eq!(pr_title("\n  first line  \nsecond"), "first line");
    let sixty = "x".repeat(60);
    assert_eq!(pr_title(&sixty), sixty);
    let long = "é".repeat(61);
    assert_eq!(pr_title(&long), format!("{}...", "é".repeat(57)));
    assert_eq!(pr_title("  \n "), "Agent task");
}

fn delivery() -> Delivery {
    Delivery {
        repo: PathBuf::from("/r"),
        branch: "bot/fix".into(),
        base_branch: "main".into(),
        task_id: "task-1".into(),
        agent_id: "bot".into(),
        description: "Fix `it` $(id)\nMore detail".into(),
        success_criteria: vec!["tests pass".into(), "no $(regressions)".into()],
        verification_summary: "pass: 2 of 2 checks passed".into(),
        task_link: Some("http://127.0.0.1:4000/api/tasks/task-1".into()),
        gh_command: "gh".into(),
        reviewer: None,
        labels: task_labels("gcu", Some("high")),
    }
}

#[test]
fn labels_name_the_agent_the_priority_and_the_risk_tier() {
    let names = |labels: Vec<Label>| labels.into_iter().map(|l| l.name).collect::<Vec<_>>();
    assert_eq!(
        names(task_labels("gcu", Some("high"))),
        ["agent:gcu", "priority:high"]
    );
    assert_eq!(names(task_labels("gcu", None)), ["agent:gcu", "priority:normal"]);
    // The submitter's free text is not made a label.
    for odd in ["", "  ", "High", "$(id)", "very very very long priority", "a b"] {
        assert_eq!(
            names(task_labels("gcu", Some(odd)))[1],
            "priority:normal",
            "{odd:?}"
        );
    }
    assert_eq!(risk_label(1).unwrap().name, "risk:tier-1");
    assert_eq!(risk_label(3).unwrap().color, "d93f0b");
    assert_eq!(risk_label(0), None);
    assert_eq!(risk_label(4), None);
}

#[test]
fn commit_messages_carry_the_first_line_the_task_and_extra_lines() {
    let d = delivery();
    let message = |description: &str| commit_message(description, &d.task_id, "");
    assert_eq!(message(&d.description), "Fix `it` $(id)\n\nTask: task-1\n");
    assert_eq!(
        message(&"y".repeat(100)),
        format!("{}\n\nTask: task-1\n", "y".repeat(72))
    );
    assert_eq!(message(" \n"), "Task task-1\n\nTask: task-1\n");
    assert_eq!(
        commit_message("Fix it", "task-1", "Not pushed: verification fail\n"),
        "Fix it\n\nTask: task-1\nNot pushed: verification fail\n"
    );
}

#[test]
fn the_body_says_what_the_task_was_and_what_changed() {
    let diff = DiffMeta {
        lines_added: 5,
        lines_deleted: 2,
        files_changed: vec!["a.txt".into(), "b`c.rs".into()],
        files_added: vec!["a.txt".into()],
        tests_exist: false,
    };
    let body = pr_body(&delivery(), &diff);
    for want in [
        "## Task task-1",
        "**Agent:** bot",
        "**Task link:** http://127.0.0.1:4000/api/tasks/task-1",
        "Fix `it` $(id)\nMore detail",
        "- tests pass\n- no $(regressions)\n",
        "pass: 2 of 2 checks passed",
        "2 file(s), +5 -2",
        "- `a.txt` (new)\n- `b'c.rs`\n",
    ] {
        assert!(body.contains(want), "{want:?} missing from:\n{body}");
    }
    assert_eq!(
        diff.to_value(),
        serde_json::json!({"lines_added": 5, "lines_deleted": 2, "files_changed": ["a.txt", "b`c.rs"],
            "files_added": ["a.txt"], "tests_exist": false})
    );
}

#[test]
fn test_files_are_recognised_by_folder_and_name() {
    for p in [
        "test/foo_test.exs",
        "tests/it.rs",
        "app/spec/models/user_spec.rb",
        "src/__tests__/a.js",
        "pkg/foo_test.go",
        "web/a.test.ts",
        "test_util.py",
        "lib/x.spec.js",
    ] {
        assert!(is_test_path(p), "{p}");
    }
    for p in [
        "src/main.rs",
        "lib/testing.ex",
        "contest.py",
        "latest/x.rs",
        "test",
        "docs/test_plan",
    ] {
        assert!(!is_test_path(p), "{p}");
    }
}

#[test]
fn the_pr_url_is_the_last_url_line() {
    assert_eq!(
        last_url("Creating pull request\nhttps://github.com/o/r/pull/7\n").as_deref(),
        Some("https://github.com/o/r/pull/7")
    );
    assert_eq!(
        last_url("a pull request for branch \"x\" into branch \"main\" already exists:\nhttps://github.com/o/r/pull/3\n")
            .as_deref(),
        Some("https://github.com/o/r/pull/3")
    );
    assert_eq!(last_url("no url here\n"), None);
}

#[test]
fn options_never_take_a_value_that_looks_like_one() {
    let mut args = Vec::new();
    flag(&mut args, "--title", "-rf everything");
    flag(&mut args, "--title", "plain");
    assert_eq!(args, ["--title=-rf everything", "--title", "plain"]);
}
