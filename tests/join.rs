//! `join` and `leave` on the real binary against the embedded hub's HTTP API: registration, the
//! token file and config on disk, the test task through a real sidecar, idempotence, refusal to
//! overwrite, revocation.

mod support;

use agentcom_sidecar::config::Secret;
use agentcom_sidecar::hub::{EmbeddedHub, HubOptions};
use agentcom_sidecar::hub_api::HubApi;
use agentcom_sidecar::link::connect::ProxyConfig;
use std::path::Path;
use std::process::Output;
use support::{binary, text, TempDir};

/// An agent that confirms and answers success at once.
const AGENT_SH: &str = r#"#!/bin/sh
: > "$AGENTCOM_STARTED_FILE"
printf '%s' '{"status":"success","output":"hello from the agent"}' > "$AGENTCOM_RESULT_FILE.tmp"
mv "$AGENTCOM_RESULT_FILE.tmp" "$AGENTCOM_RESULT_FILE"
"#;

async fn run(args: &[&str]) -> Output {
    let mut command = binary();
    command.args(args);
    tokio::process::Command::from(command).output().await.unwrap()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

struct Setup {
    hub: EmbeddedHub,
    dir: TempDir,
    config: String,
    wake: String,
}

async fn setup(label: &str) -> Setup {
    let hub = EmbeddedHub::start(HubOptions::default()).await.unwrap();
    let dir = TempDir::new(label);
    std::fs::write(dir.join("agent.sh"), AGENT_SH).unwrap();
    let wake = format!("sh '{}'", dir.join("agent.sh").display());
    let config = dir.join("agent/config.json").display().to_string();
    Setup {
        hub,
        dir,
        config,
        wake,
    }
}

impl Setup {
    fn api(&self, token: &str) -> HubApi {
        HubApi::new(&self.hub.api_url(), Some(Secret::new(token.to_owned())), None)
            .unwrap()
            .with_proxy(ProxyConfig::default())
    }

    async fn join(&self, agent: &str, extra: &[&str]) -> Output {
        let url = self.hub.api_url();
        let mut args = vec![
            "join",
            url.as_str(),
            "--agent-id",
            agent,
            "--wake-command",
            &self.wake,
            "--config",
            &self.config,
        ];
        args.extend_from_slice(extra);
        run(&args).await
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent/token"))
            .unwrap()
            .trim()
            .to_owned()
    }
}

#[tokio::test]
async fn join_registers_writes_a_private_token_and_config_and_a_task_completes() {
    let s = setup("join").await;
    let out = s.join("onboard-a", &[]).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let token = s.token();
    assert_eq!(token.len(), 64, "the hub issues 64 hex characters");
    let config_text = std::fs::read_to_string(&s.config).unwrap();
    assert!(!shown.contains(&token), "the token was printed:\n{shown}");
    assert!(
        !config_text.contains(&token),
        "the token is in config.json:\n{config_text}"
    );
    #[cfg(unix)]
    {
        assert_eq!(mode(&s.dir.join("agent/token")), 0o600);
        assert_eq!(mode(Path::new(&s.config)), 0o600);
        assert_eq!(mode(&s.dir.join("agent/join-progress.json")), 0o600);
    }
    let config: serde_json::Value = serde_json::from_str(&config_text).unwrap();
    assert_eq!(config["agent_id"], "onboard-a");
    assert_eq!(config["token_file"], "token");
    assert_eq!(config["hub_url"], format!("ws://{}/ws", s.hub.addr()));
    // The hub accepts the token it issued, and the test task went through this agent.
    let tasks = s.api(&token).tasks(&[]).await.unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:#?}");
    let task = &tasks[0];
    assert_eq!(task["status"], "completed", "{task:#}");
    assert_eq!(task["assigned_to"], "onboard-a");
    assert_eq!(task["metadata"]["onboarding_test"], true);
    assert!(task["description"]
        .as_str()
        .unwrap()
        .starts_with("Onboarding test:"));
    for step in ["hub", "register", "config", "check", "test"] {
        assert!(
            shown.lines().any(|l| l.contains(&format!("s  {step}"))),
            "no {step} step:\n{shown}"
        );
    }
    assert!(
        shown.contains("completed: the hub, this sidecar and your agent work together"),
        "{shown}"
    );
    // The sidecar it started for the task is gone again.
    let lock = s.dir.join("agent/agentcom-sidecar.lock");
    assert!(agentcom_sidecar::lock::InstanceLock::holder(lock.parent().unwrap()).is_none());

    // Twice: every step is done; nothing is registered or submitted again.
    let again = s.join("onboard-a", &[]).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let shown = text(&again);
    assert!(shown.contains("register  done earlier: onboard-a"), "{shown}");
    assert!(shown.contains("test      done earlier"), "{shown}");
    assert_eq!(s.token(), token);
    assert_eq!(s.api(&token).tasks(&[]).await.unwrap().len(), 1);
}

#[tokio::test]
async fn join_does_not_overwrite_a_config_and_registers_nothing() {
    let s = setup("join-noforce").await;
    std::fs::create_dir_all(s.dir.join("agent")).unwrap();
    support::write_private(Path::new(&s.config), "{\"mine\": true}\n");
    let out = s.join("onboard-b", &["--no-test-task"]).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(78), "{shown}");
    assert!(shown.contains("already exists; not overwriting it"), "{shown}");
    assert!(shown.contains("--force"), "{shown}");
    assert_eq!(std::fs::read_to_string(&s.config).unwrap(), "{\"mine\": true}\n");
    assert!(!s.dir.join("agent/token").exists());
    // The id is still free on the hub: nothing was registered.
    let reg = s.api("x").register("onboard-b").await.unwrap();
    assert_eq!(reg.agent_id, "onboard-b");
}

#[tokio::test]
async fn a_taken_agent_id_names_the_hubs_answer_and_what_to_do() {
    let s = setup("join-taken").await;
    s.hub.add_token("onboard-c");
    let out = s.join("onboard-c", &["--no-test-task"]).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(65), "{shown}");
    assert!(
        shown.contains("answered 409: agent_id already registered"),
        "{shown}"
    );
    assert!(shown.contains("--rejoin"), "{shown}");
}

#[tokio::test]
async fn a_generated_name_is_readable() {
    let s = setup("join-name").await;
    let url = s.hub.api_url();
    let out = run(&["join", &url, "--no-test-task", "--config", &s.config]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&s.config).unwrap()).unwrap();
    let id = config["agent_id"].as_str().unwrap();
    let class = id.split('-').next().unwrap();
    assert!(
        ["gcu", "gsv", "lsv", "msv", "rou", "gou", "vfp"].contains(&class),
        "{id}"
    );
    assert!(text(&out).contains(&format!("registered {id}")), "{}", text(&out));
}

#[tokio::test]
async fn leave_revokes_the_token_deletes_its_file_and_keeps_results() {
    let s = setup("leave").await;
    let out = s.join("onboard-d", &["--no-test-task"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let token = s.token();
    let results = s.dir.join("agent/results");
    std::fs::create_dir_all(&results).unwrap();
    std::fs::write(results.join("kept.json"), "{}").unwrap();
    let out = run(&["leave", "--purge", "--config", &s.config]).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(!shown.contains(&token), "{shown}");
    assert!(shown.contains("revoked every token of onboard-d"), "{shown}");
    assert!(!s.dir.join("agent/token").exists());
    assert!(!Path::new(&s.config).exists(), "--purge removes the config");
    assert!(results.join("kept.json").exists(), "results are never removed");
    assert!(
        shown.contains(&format!("results_dir {}", results.display())),
        "kept results are listed:\n{shown}"
    );
    // The hub refuses the old token now.
    let e = s.api(&token).tasks(&[]).await.unwrap_err();
    assert_eq!(e.status, Some(401), "{e}");
}

#[tokio::test]
async fn leave_says_plainly_when_the_hub_cannot_revoke_and_keeps_the_token() {
    let s = setup("leave-down").await;
    let out = s.join("onboard-e", &["--no-test-task"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    s.hub.stop().await;
    let out = run(&["leave", "--config", &s.config]).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(69), "{shown}");
    assert!(shown.contains("revoke    FAILED: DELETE"), "{shown}");
    assert!(shown.contains("nothing was deleted"), "{shown}");
    assert!(s.dir.join("agent/token").exists());
}

/// Kills the sidecar the fake `systemctl` started, if the test ends before `leave` does.
#[cfg(target_os = "linux")]
struct KillPidFile(std::path::PathBuf);

#[cfg(target_os = "linux")]
impl Drop for KillPidFile {
    fn drop(&mut self) {
        if let Some(pid) = support::read_pid(&self.0) {
            let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

/// `join --service` with a fake `systemctl` that starts the unit's sidecar on `enable --now` and
/// stops it on `disable --now`: the test task goes through the service's sidecar, and `leave`
/// uninstalls it (stopping that sidecar) before revoking.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn join_service_sends_the_test_task_through_the_service_and_leave_removes_it() {
    use std::os::unix::fs::PermissionsExt;
    let s = setup("join-service").await;
    let bin = s.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = s.dir.join("systemctl.log");
    let pidfile = s.dir.join("service.pid");
    let _guard = KillPidFile(pidfile.clone());
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> '{log}'\ncase \"$*\" in\n  *'enable --now'*) '{exe}' run --config '{config}' --log-format off </dev/null >/dev/null 2>&1 & echo $! > '{pid}' ;;\n  *'disable --now'*) kill \"$(cat '{pid}')\" ;;\nesac\n",
        log = log.display(),
        exe = env!("CARGO_BIN_EXE_agentcom-sidecar"),
        config = s.config,
        pid = pidfile.display(),
    );
    std::fs::write(bin.join("systemctl"), script).unwrap();
    std::fs::set_permissions(bin.join("systemctl"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let xdg = s.dir.join("xdg");
    let env = |command: &mut std::process::Command| {
        command
            .env("PATH", &path)
            .env("XDG_CONFIG_HOME", &xdg)
            .env("HOME", s.dir.path());
    };

    let mut command = binary();
    env(&mut command);
    let url = s.hub.api_url();
    command.args([
        "join",
        &url,
        "--agent-id",
        "onboard-f",
        "--wake-command",
        &s.wake,
        "--service",
        "--user",
    ]);
    command.args(["--config", &s.config]);
    let out = tokio::process::Command::from(command).output().await.unwrap();
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("service   installed and started"), "{shown}");
    assert!(shown.contains("the service's sidecar takes it"), "{shown}");
    assert!(
        shown.contains("completed: the hub, this sidecar and your agent work together"),
        "{shown}"
    );
    let unit = xdg.join("systemd/user/agentcom-sidecar.service");
    assert!(std::fs::read_to_string(&unit).unwrap().contains(&s.config));
    let pid = support::read_pid(&pidfile).expect("the fake systemctl started the sidecar");
    assert!(
        !support::process_gone(pid),
        "the service's sidecar runs on after join"
    );

    let mut command = binary();
    env(&mut command);
    command.args(["leave", "--config", &s.config]);
    let out = tokio::process::Command::from(command).output().await.unwrap();
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("service   stopped and uninstalled"), "{shown}");
    assert!(!unit.exists());
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("--user disable --now agentcom-sidecar.service"));
    support::poll(
        std::time::Duration::from_secs(10),
        || format!("the service's sidecar {pid} still runs"),
        || support::process_gone(pid).then_some(()),
    )
    .await;
}

#[tokio::test]
async fn join_run_again_finishes_the_job() {
    let s = setup("join-resume").await;
    let out = s.join("onboard-g", &["--no-test-task"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let token = s.token();
    assert!(s.api(&token).tasks(&[]).await.unwrap().is_empty());
    // The same join without --no-test-task: only the test task is left to do.
    let out = s.join("onboard-g", &[]).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    for step in [
        "register  done earlier",
        "config    done earlier",
        "check     done earlier",
    ] {
        assert!(shown.contains(step), "{step} in\n{shown}");
    }
    assert!(
        shown.contains("completed: the hub, this sidecar and your agent work together"),
        "{shown}"
    );
    assert_eq!(s.token(), token);
}

#[tokio::test]
async fn rejoin_reuses_the_token_file_instead_of_registering() {
    let s = setup("join-rejoin").await;
    let out = s.join("onboard-h", &["--no-test-task"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let token = s.token();
    // A new machine: the token file was copied over, nothing else.
    std::fs::remove_file(&s.config).unwrap();
    std::fs::remove_file(s.dir.join("agent/join-progress.json")).unwrap();
    let plain = s.join("onboard-h", &["--no-test-task"]).await;
    assert_eq!(plain.status.code(), Some(78), "{}", text(&plain));
    assert!(
        text(&plain).contains("--rejoin to reuse that registration"),
        "{}",
        text(&plain)
    );
    let out = s.join("onboard-h", &["--rejoin"]).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("reusing the registration of onboard-h"), "{shown}");
    assert!(shown.contains("the hub identified the agent"), "{shown}");
    assert_eq!(s.token(), token);
    assert!(!shown.contains(&token), "{shown}");
}

/// A repository with one commit, at `dir/origin`; its path.
fn origin(dir: &TempDir) -> String {
    let origin = dir.join("origin");
    std::fs::create_dir_all(&origin).unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(&origin)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(&["init", "-q"]);
    std::fs::write(origin.join("README.md"), "hello\n").unwrap();
    git(&["add", "README.md"]);
    git(&["commit", "-q", "-m", "first"]);
    origin.display().to_string()
}

#[tokio::test]
async fn the_hubs_default_repository_is_cloned_as_repo_dir() {
    let s = setup("join-repo").await;
    let url = origin(&s.dir);
    s.hub.set_default_repo(Some(&url));
    let out = s.join("onboard-i", &["--no-test-task"]).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains(&format!("cloning {url}")), "{shown}");
    assert_eq!(
        std::fs::read_to_string(s.dir.join("agent/repo/README.md")).unwrap(),
        "hello\n"
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&s.config).unwrap()).unwrap();
    assert_eq!(config["repo_dir"], "./repo");
}

#[tokio::test]
async fn a_repo_url_that_looks_like_an_option_runs_nothing() {
    let s = setup("join-repo-hostile").await;
    let marker = s.dir.join("pwned");
    let hostile = format!("--upload-pack=touch {}", marker.display());
    // From the hub (its default repository): hub text.
    s.hub.set_default_repo(Some(&hostile));
    let out = s.join("onboard-j", &["--no-test-task"]).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(69), "{shown}");
    assert!(shown.contains("repo      FAILED: git clone failed"), "{shown}");
    assert!(!marker.exists(), "the URL became an option of git");
    assert!(!Path::new(&s.config).exists(), "no config after a failed step");
}

#[tokio::test]
async fn a_failed_check_is_fixed_by_running_join_again_with_force() {
    let s = setup("join-fix").await;
    let url = s.hub.api_url();
    let bad = [
        "join",
        url.as_str(),
        "--agent-id",
        "onboard-k",
        "--config",
        &s.config,
        "--wake-command",
        "/nonexistent/agent run",
    ];
    let out = run(&bad).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(10), "check's host verdict: {shown}");
    assert!(
        shown.contains("check     FAILED: check ended with exit code 10"),
        "{shown}"
    );
    assert!(shown.contains("next: fix what check says"), "{shown}");
    let out = s.join("onboard-k", &["--force"]).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("register  done earlier: onboard-k"), "{shown}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&s.config).unwrap()).unwrap();
    assert_eq!(config["wake_command"], s.wake.as_str(), "the new wake command");
}
