//! `check`: one precise verdict and exit code for each way a config can fail to work.

mod support;

use agentcom_sidecar::check::{self, code};
use agentcom_sidecar::config::Config;
use agentcom_sidecar::hub::{EmbeddedHub, HubEvent, HubOptions};
use agentcom_sidecar::link::connect::{BoxFuture, NetOptions, ProxyConfig, Resolve};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn write(dir: &TempDir, agent: &str, token: &str, url: &str, extra: serde_json::Value) -> std::path::PathBuf {
    let mut config: serde_json::Value = serde_json::from_str(&config_json(agent, token, url, extra)).unwrap();
    if config.get("wake_command").is_none() {
        config["wake_command"] = "true".into();
    }
    let path = dir.join("config.json");
    write_private(&path, &config.to_string());
    path
}

fn check_binary(path: &std::path::Path) -> (Option<i32>, String) {
    let out = binary().args(["check", "--config"]).arg(path).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn ok_when_the_hub_identifies_and_closes_cleanly() {
    let HubSetup {
        hub,
        token,
        dir: _dir,
        config: path,
        ..
    } = HubSetup::start("check-ok", json!({"wake_command": "true"})).await;
    let (code, out) = tokio::task::spawn_blocking(move || check_binary(&path))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("ok: the hub identified this sidecar as check-ok"),
        "{out}"
    );
    assert!(out.contains("results_dir"), "{out}");
    assert!(!out.contains(&token), "the token leaked:\n{out}");
    poll(
        SECS(2),
        || "the hub did not see a close 1000".to_owned(),
        || hub.history().iter().any(closed_by_sidecar).then_some(()),
    )
    .await;
}

#[tokio::test]
async fn token_problems_have_their_own_verdicts() {
    let hub = EmbeddedHub::start(HubOptions::default()).await.unwrap();
    hub.add_token("check-token");
    let other = hub.add_token("someone-else");
    for (token, expected, needle) in [
        ("not-a-token-at-all", code::INVALID_TOKEN, "invalid_token"),
        (other.as_str(), code::TOKEN_AGENT_MISMATCH, "token_agent_mismatch"),
    ] {
        let dir = TempDir::new("check-token");
        let path = write(&dir, "check-token", token, &hub.url(), json!({}));
        let (code, out) = tokio::task::spawn_blocking(move || check_binary(&path))
            .await
            .unwrap();
        assert_eq!(code, Some(i32::from(expected)), "{out}");
        assert!(out.contains(needle), "{out}");
    }
}

#[test]
fn refused_when_nothing_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = TempDir::new("check-refused");
    let path = write(
        &dir,
        "check-refused",
        "check-refused-token-0123456789",
        &format!("ws://127.0.0.1:{port}/ws"),
        json!({}),
    );
    let (code, out) = check_binary(&path);
    assert_eq!(code, Some(i32::from(code::REFUSED)), "{out}");
}

#[tokio::test]
async fn a_hub_cooldown_is_its_own_verdict() {
    let HubSetup {
        hub,
        token,
        dir: _dir,
        config: path,
        ..
    } = HubSetup::start("check-cooldown", json!({"wake_command": "true"})).await;
    // Earn a strike: 10 invalid frames on an identified socket.
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, _) = tokio_tungstenite::connect_async(hub.url()).await.unwrap();
    let identify = json!({"type":"identify","agent_id":"check-cooldown","token":token}).to_string();
    ws.send(Message::text(identify)).await.unwrap();
    ws.next().await.unwrap().unwrap();
    for i in 0..10 {
        ws.send(Message::text(format!(r#"{{"type":"bogus_{i}"}}"#)))
            .await
            .unwrap();
    }
    while let Some(Ok(_)) = ws.next().await {}
    let (code, out) = tokio::task::spawn_blocking(move || check_binary(&path))
        .await
        .unwrap();
    assert_eq!(code, Some(i32::from(code::COOLDOWN)), "{out}");
    assert!(out.contains("cooldown active: retry in"), "{out}");
}

#[test]
fn a_missing_wake_program_is_a_host_problem() {
    let dir = TempDir::new("check-host");
    let path = write(
        &dir,
        "check-host",
        "check-host-token-0123456789",
        "ws://127.0.0.1:9/ws",
        json!({"wake_command": "no-such-agent-program-xyz --go"}),
    );
    let (code, out) = check_binary(&path);
    assert!(
        out.contains("`no-such-agent-program-xyz` is not found on PATH"),
        "{out}"
    );
    // The connection fails too (nothing listens on port 9): the connection verdict wins.
    assert_ne!(code, Some(0));
}

#[tokio::test]
async fn a_running_daemon_is_not_identified_again() {
    let HubSetup {
        hub,
        mut events,
        dir,
        config: path,
        ..
    } = HubSetup::start("check-daemon", json!({"wake_command": "true"})).await;
    let daemon = Sidecar::spawn(dir.path(), &path);
    wait_hub(&mut events, SECS(10), "identified", identified("check-daemon")).await;
    daemon.wait_log_event("identified", SECS(5)).await.unwrap();
    // Give the daemon's state file a moment to say identified.
    let state = dir.join("agentcom-sidecar.state.json");
    poll(
        SECS(5),
        || format!("{} never said identified", state.display()),
        || {
            let text = std::fs::read_to_string(&state).unwrap_or_default();
            text.contains("\"identified\"").then_some(())
        },
    )
    .await;
    let p = path.clone();
    let (code, out) = tokio::task::spawn_blocking(move || check_binary(&p))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("not identifying again"), "{out}");
    assert!(out.contains(&format!("running (PID {})", daemon.pid())), "{out}");
    let identifies = hub
        .history()
        .iter()
        .filter(|e| matches!(e, HubEvent::Identified { .. }))
        .count();
    assert_eq!(identifies, 1, "check must not identify while the daemon runs");
}

/// A resolver that fails every name: "name not resolved" without any DNS query.
struct NoSuchName;

impl Resolve for NoSuchName {
    fn resolve(&self, host: &str, _port: u16) -> BoxFuture<std::io::Result<Vec<std::net::SocketAddr>>> {
        let host = host.to_owned();
        Box::pin(async move {
            Err(std::io::Error::other(format!(
                "failed to lookup address information: {host}: Name or service not known"
            )))
        })
    }
}

#[tokio::test]
async fn an_unresolvable_name_is_its_own_verdict() {
    let dir = TempDir::new("check-dns");
    let path = write(
        &dir,
        "check-dns",
        "check-dns-token-0123456789",
        "ws://hub.invalid:4000/ws",
        json!({}),
    );
    let config = Config::load(&path).unwrap();
    let net = NetOptions {
        ca_file: None,
        proxy: ProxyConfig::default(),
        resolver: Arc::new(NoSuchName),
    };
    let verdict = check::probe(&config, net, SECS(5)).await;
    assert_eq!(verdict.code, code::NAME_NOT_RESOLVED, "{verdict:?}");
    assert!(verdict.message.contains("hub.invalid"), "{verdict:?}");
}

#[test]
fn a_bad_ca_file_is_a_config_failure_before_anything_is_ok() {
    let dir = TempDir::new("check-ca");
    std::fs::write(dir.join("hub-ca.pem"), "not a certificate\n").unwrap();
    let path = write(
        &dir,
        "check-ca",
        "a-token-of-sixteen-chars",
        "wss://127.0.0.1:9/ws",
        json!({"ca_file": "hub-ca.pem"}),
    );
    let (code, out) = check_binary(&path);
    assert_eq!(code, Some(78), "{out}");
    assert!(!out.contains("ok: config"), "{out}");
    assert!(
        out.starts_with(&format!("error: {}: ca_file ", path.display())),
        "{out}"
    );
    assert!(out.contains("hub-ca.pem holds no PEM certificate"), "{out}");
    assert!(out.contains("help: set `ca_file`"), "{out}");
}

#[test]
fn check_says_which_proxy_it_goes_through_and_when_it_is_unreachable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = TempDir::new("check-proxy");
    let path = write(
        &dir,
        "check-proxy",
        "a-token-of-sixteen-chars",
        "ws://hub.example:4000/ws",
        json!({}),
    );
    let mut command = binary();
    for name in ["http_proxy", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"] {
        command.env_remove(name);
    }
    let out = command
        .env("HTTP_PROXY", format!("http://dave:s3cret-pw@{closed}"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains(&format!(
            "ok: the hub is reached through the proxy {closed} (from HTTP_PROXY)"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "cannot reach the proxy {closed} set by HTTP_PROXY=http://***@{closed}: connection refused"
        )),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(i32::from(code::OTHER)), "{text}");
    assert!(!text.contains("s3cret-pw"), "{text}");
}
