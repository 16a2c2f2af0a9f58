//! The suite's own helpers (tests/support): the scrubbed environment every spawn of the binary
//! gets, and the skip that fails under CI. Each check re-runs this test binary as a child with
//! the environment under test, so this process's environment is never changed.

mod support;

use std::process::{Command, Output};
use support::*;

/// This test binary running only the ignored test `name`, with `env` added to its environment
/// and `CI` set to `ci` (or removed).
fn run_child(name: &str, ci: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["--exact", name, "--ignored", "--nocapture", "--test-threads=1"]);
    match ci {
        Some(value) => command.env("CI", value),
        None => command.env_remove("CI"),
    };
    command
        .env(CHILD_MARK, "1")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// Set only in the children, so that `cargo test -- --include-ignored` does not run them as checks.
const CHILD_MARK: &str = "SUPPORT_HELPERS_CHILD";

fn is_child() -> bool {
    std::env::var_os(CHILD_MARK).is_some()
}

/// Not a check by itself: the child of `cannot_run_here_fails_under_ci_and_skips_elsewhere`.
#[test]
#[ignore = "run as a child by cannot_run_here_fails_under_ci_and_skips_elsewhere"]
fn child_a_test_that_cannot_run_here() {
    if !is_child() {
        return;
    }
    cannot_run_here("child_a_test_that_cannot_run_here", "no such facility here");
}

#[test]
fn cannot_run_here_fails_under_ci_and_skips_elsewhere() {
    const CHILD: &str = "child_a_test_that_cannot_run_here";
    let under_ci = run_child(CHILD, Some("true"), &[]);
    let stderr = String::from_utf8_lossy(&under_ci.stderr);
    let stdout = String::from_utf8_lossy(&under_ci.stdout);
    assert!(!under_ci.status.success(), "passed under CI:\n{stdout}{stderr}");
    assert!(
        stderr.contains("cannot run on this machine: no such facility here") && stderr.contains("CI is set"),
        "{stderr}"
    );
    for ci in [None, Some(""), Some("false"), Some("0")] {
        let local = run_child(CHILD, ci, &[]);
        let stderr = String::from_utf8_lossy(&local.stderr);
        assert!(local.status.success(), "CI={ci:?}: failed outside CI:\n{stderr}");
        assert!(
            stderr.contains("SKIPPED child_a_test_that_cannot_run_here: no such facility here"),
            "CI={ci:?}: the skip is not on stderr:\n{stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&local.stdout).contains("SKIPPED"),
            "CI={ci:?}: the skip went to stdout"
        );
    }
}

/// The variables the caller's shell may hold that must never reach the binary.
#[cfg(unix)]
const POISON: &[(&str, &str)] = &[
    ("HTTP_PROXY", "http://127.0.0.1:9"),
    ("http_proxy", "http://127.0.0.1:9"),
    ("HTTPS_PROXY", "http://127.0.0.1:9"),
    ("https_proxy", "http://127.0.0.1:9"),
    ("ALL_PROXY", "http://127.0.0.1:9"),
    ("all_proxy", "http://127.0.0.1:9"),
    ("NO_PROXY", "example.org"),
    ("no_proxy", "example.org"),
    ("AGENTCOM_TOKEN", "poison-token"),
    ("AGENTCOM_SIDECAR_CONFIG", "/nonexistent/config.json"),
    ("AGENTCOM_ANYTHING_NEW", "poison"),
    ("INVOCATION_ID", "poison"),
    ("NOTIFY_SOCKET", "/nonexistent/notify.sock"),
];

/// Not a check by itself: the child of `a_spawned_command_gets_no_proxy_agentcom_or_supervisor_variables`.
#[cfg(unix)]
#[test]
#[ignore = "run as a child by a_spawned_command_gets_no_proxy_agentcom_or_supervisor_variables"]
fn child_prints_a_scrubbed_environment() {
    if !is_child() {
        return;
    }
    let out = scrub_env(&mut Command::new("env"))
        .env("KEPT", "yes")
        .output()
        .unwrap();
    print!("ENV-BEGIN\n{}ENV-END\n", String::from_utf8_lossy(&out.stdout));
}

#[cfg(unix)]
#[test]
fn a_spawned_command_gets_no_proxy_agentcom_or_supervisor_variables() {
    let out = run_child("child_prints_a_scrubbed_environment", None, POISON);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = stdout
        .split("ENV-BEGIN\n")
        .nth(1)
        .and_then(|rest| rest.split("ENV-END").next())
        .unwrap_or_else(|| panic!("no environment printed:\n{stdout}"));
    let names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
    for (name, _) in POISON {
        assert!(!names.contains(name), "{name} reached the child:\n{env}");
    }
    assert!(
        names.contains(&"KEPT"),
        "variables set on the command stay:\n{env}"
    );
    assert!(
        names.contains(&"PATH"),
        "the rest of the environment stays:\n{env}"
    );
}
