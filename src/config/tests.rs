//! Unit tests of config loading: defaults, every error message, token sources, permissions.

use super::schema::suggest;
use super::*;
use serde_json::json;

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn p() -> PathBuf {
    PathBuf::from("/srv/agent/config.json")
}

fn minimal() -> String {
    format!(
        r#"{{"agent_id":"a1","token":"{TOKEN}","hub_url":"ws://127.0.0.1:4000/ws","wake_command":"true"}}"#
    )
}

/// The minimal config with `key` set to the raw JSON `value`.
fn with(key: &str, value: &str) -> String {
    let mut v: serde_json::Map<String, Value> = serde_json::from_str(&minimal()).unwrap();
    v.insert(key.to_string(), serde_json::from_str(value).unwrap());
    serde_json::to_string(&v).unwrap()
}

fn without(key: &str) -> String {
    let mut v: serde_json::Map<String, Value> = serde_json::from_str(&minimal()).unwrap();
    v.remove(key);
    serde_json::to_string(&v).unwrap()
}

fn err(text: &str) -> (ConfigErrorKind, String) {
    let e = Config::parse(text, &p()).expect_err("should fail");
    let msg = e.to_string();
    assert!(msg.contains("/srv/agent/config.json"), "no path in: {msg}");
    assert!(!msg.contains(TOKEN), "token leaked in: {msg}");
    (e.kind, msg)
}

#[test]
fn defaults() {
    let c = Config::parse(&minimal(), &p()).unwrap();
    assert_eq!(c.path, p());
    assert_eq!(c.agent_id, "a1");
    assert_eq!(c.token.expose(), TOKEN);
    assert_eq!(c.hub_url, "ws://127.0.0.1:4000/ws");
    assert_eq!(c.name, "a1");
    assert!(c.capabilities.is_empty());
    assert_eq!(c.wake_command.as_deref(), Some("true"));
    assert_eq!(c.confirmation_timeout, Duration::from_millis(30_000));
    assert_eq!(c.queue_file, PathBuf::from("/srv/agent/queue.json"));
    assert_eq!(c.cancel_command, None);
    assert_eq!(c.wake_timeout, Duration::from_secs(60));
    assert_eq!(c.wake_retry_delays, [5, 15, 30].map(Duration::from_secs));
    assert_eq!(c.max_pending, DEFAULT_MAX_PENDING);
    assert_eq!(c.progress_keepalive, Duration::from_secs(300));
    assert_eq!(c.readopt_window, Duration::from_secs(120));
    assert_eq!(c.task_timeout, Duration::from_secs(7200));
    assert_eq!(c.agent_exit_grace, Duration::from_secs(60));
    assert_eq!(c.results_dir, PathBuf::from("/srv/agent/results"));
    assert_eq!(c.log_file, PathBuf::from("/srv/agent/sidecar.log"));
    assert_eq!(c.heartbeat_interval, Duration::from_millis(30_000));
    assert_eq!(c.heartbeat_timeout, Duration::from_millis(10_000));
    assert_eq!(c.reconnect_initial, Duration::from_millis(1_000));
    assert_eq!(c.reconnect_max, Duration::from_millis(60_000));
    assert_eq!(c.reconnect_jitter, 0.5);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn nulls_mean_defaults() {
    let mut text = minimal();
    for k in [
        "name",
        "capabilities",
        "confirmation_timeout_ms",
        "results_dir",
        "log_file",
        "heartbeat_interval_ms",
        "heartbeat_timeout_ms",
        "reconnect_initial_ms",
        "reconnect_max_ms",
        "reconnect_jitter",
    ] {
        text = {
            let mut v: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
            v.insert(k.to_string(), Value::Null);
            serde_json::to_string(&v).unwrap()
        };
    }
    let c = Config::parse(&text, &p()).unwrap();
    assert_eq!(c.name, "a1");
    assert_eq!(c.reconnect_jitter, 0.5);
    assert_eq!(c.results_dir, PathBuf::from("/srv/agent/results"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn tokens_under_16_characters_are_refused_saying_why() {
    // Sixteen is enough (the hub issues 64): only shorter ones are refused.
    assert!(Config::parse(&with("token", r#""0123456789abcdef""#), &p()).is_ok());
    let err = Config::parse(&with("token", r#""secret""#), &p())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("/srv/agent/config.json: field `token` is 6 characters long"),
        "{err}"
    );
    assert!(err.contains("at least 16"), "{err}");
    assert!(err.contains("panic messages"), "{err}");
    assert!(!err.contains("\"secret\""), "{err}");
    let opts = LoadOptions {
        env_token: Some("zq9x".into()),
        allow_insecure_permissions: false,
    };
    let err = Config::parse_with(&minimal(), &p(), &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("the AGENTCOM_TOKEN environment variable"),
        "{err}"
    );
    assert!(err.contains("holds a token that is 4 characters long"), "{err}");
    assert!(!err.contains("zq9x"), "{err}");
}

#[test]
fn explicit_values() {
    let text = r#"{"agent_id":"a1","token":"0123456789abcdef","hub_url":"wss://[::1]/ws","name":"Agent One",
        "capabilities":["code","review"],"wake_command":"  ","confirmation_timeout_ms":120000,
        "results_dir":"/var/res","log_file":"logs/s.log","heartbeat_interval_ms":20000,
        "heartbeat_timeout_ms":5000,"reconnect_initial_ms":500,"reconnect_max_ms":500,"reconnect_jitter":0}"#;
    let c = Config::parse(text, &p()).unwrap();
    assert_eq!(c.name, "Agent One");
    assert_eq!(c.capabilities, ["code", "review"]);
    assert_eq!(c.wake_command, None);
    assert!(c.warnings[0].contains("no `wake_command`"), "{:?}", c.warnings);
    assert_eq!(c.confirmation_timeout, Duration::from_secs(120));
    assert_eq!(c.results_dir, PathBuf::from("/var/res"));
    assert_eq!(c.log_file, PathBuf::from("/srv/agent/logs/s.log"));
    assert_eq!(c.heartbeat_interval, Duration::from_secs(20));
    assert_eq!(c.reconnect_max, Duration::from_millis(500));
    assert_eq!(c.reconnect_jitter, 0.0);
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let text = with("results_dir", r#""../shared/results""#);
    let c = Config::parse(&text, Path::new("/etc/agentcom/config.json")).unwrap();
    assert_eq!(c.results_dir, PathBuf::from("/etc/agentcom/../shared/results"));
    assert_eq!(c.log_file, PathBuf::from("/etc/agentcom/sidecar.log"));
    // A relative config path is made absolute against the cwd, not left relative.
    let c = Config::parse(&minimal(), Path::new("sub/config.json")).unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(c.path, cwd.join("sub/config.json"));
    assert_eq!(c.results_dir, cwd.join("sub/results"));
    // "" means the default, as with Node's `||`.
    let c = Config::parse(&with("log_file", r#""""#), &p()).unwrap();
    assert_eq!(c.log_file, PathBuf::from("/srv/agent/sidecar.log"));
}

#[test]
fn bom_is_stripped() {
    let text = format!("\u{feff}{}", minimal());
    assert_eq!(Config::parse(&text, &p()).unwrap().agent_id, "a1");
}

#[test]
fn node_only_keys_warn_once_each() {
    let text = with("log_level", r#""debug""#);
    let c = Config::parse(&text, &p()).unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings.contains(&"/srv/agent/config.json: `log_level` is a Node sidecar setting this sidecar does not use; it is ignored".to_string()), "{:?}", c.warnings);
    // Left at Node's "off" value, they change nothing: no warning.
    let c = Config::parse(&with("workspace", r#""""#), &p()).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn delivery_keys_are_read_and_the_api_url_derived() {
    let c = Config::parse(&minimal(), &p()).unwrap();
    assert_eq!(c.repo_dir, None);
    assert_eq!(c.gh_command, "gh");
    assert_eq!(c.reviewer, None);
    assert!(c.workspaces_dir.ends_with("workspaces"), "{:?}", c.workspaces_dir);
    assert_eq!(
        crate::config::api_url_from("ws://127.0.0.1:4000/ws"),
        "http://127.0.0.1:4000"
    );
    assert_eq!(
        crate::config::api_url_from("wss://hub.example/ws?x=1"),
        "https://hub.example"
    );
    let mut v: serde_json::Map<String, Value> = serde_json::from_str(&minimal()).unwrap();
    for (k, val) in [
        ("repo_dir", "repo"),
        ("hub_api_url", "http://h:4000/"),
        ("reviewer", "octocat"),
        ("gh_command", "/opt/gh"),
        ("workspaces_dir", "/var/ws"),
    ] {
        v.insert(k.into(), Value::String(val.into()));
    }
    let c = Config::parse(&serde_json::to_string(&v).unwrap(), &p()).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(
        c.repo_dir.as_deref(),
        Some(std::path::Path::new("/srv/agent/repo"))
    );
    assert_eq!(c.hub_api_url, "http://h:4000");
    assert_eq!(c.reviewer.as_deref(), Some("octocat"));
    assert_eq!(c.gh_command, "/opt/gh");
    assert_eq!(c.workspaces_dir, std::path::PathBuf::from("/var/ws"));
    let e = Config::parse(&with("hub_api_url", r#""ftp://h""#), &p())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("field `hub_api_url`") || e.contains("hub_api_url"),
        "{e}"
    );
}

#[test]
fn unknown_keys_warn_with_suggestions() {
    let c = Config::parse(&with("confirmaton_timeout_ms", "5"), &p()).unwrap();
    assert_eq!(
        c.warnings,
        ["/srv/agent/config.json: unknown key `confirmaton_timeout_ms` is ignored; did you mean `confirmation_timeout_ms`?"]
    );
    let c = Config::parse(&with("heartbeat_interval", "5"), &p()).unwrap();
    assert!(c.warnings[0].contains("did you mean `heartbeat_interval_ms`?"));
    let c = Config::parse(&with("colour", "5"), &p()).unwrap();
    assert_eq!(
        c.warnings,
        ["/srv/agent/config.json: unknown key `colour` is ignored"]
    );
    // A typo of a required key is an error that says so.
    let text = without("hub_url").replace('}', r#","hub_ulr":"ws://h:4000/ws"}"#);
    let (kind, msg) = err(&text);
    assert!(matches!(kind, ConfigErrorKind::Invalid { ref field, .. } if field == "hub_url"));
    assert!(msg.contains("there is a key `hub_ulr`"), "{msg}");
    assert!(msg.contains("did you mean `hub_url`?"), "{msg}");
}

#[test]
fn duplicate_keys_warn() {
    let text = minimal().replace('}', r#","agent_id":"a2"}"#);
    let c = Config::parse(&text, &p()).unwrap();
    assert_eq!(c.agent_id, "a2");
    assert!(c.warnings[0].contains("`agent_id` appears more than once; the last one is used"));
}

#[test]
fn not_found_and_unreadable() {
    let dir = std::env::temp_dir().join(format!("agentcom-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("nope.json");
    let e = Config::load(&missing).unwrap_err();
    assert!(matches!(e.kind, ConfigErrorKind::NotFound));
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("config file {} not found", missing.display())),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "install -m 600 config.json.example {}",
            missing.display()
        )),
        "{msg}"
    );
    assert!(msg.contains("`agent_id`, `token` and `hub_url`"), "{msg}");
    assert!(
        msg.contains("--config PATH") && msg.contains("AGENTCOM_SIDECAR_CONFIG"),
        "{msg}"
    );
    assert!(!msg.contains("cp config.json.example"), "{msg}");

    let e = Config::load(&dir).unwrap_err();
    assert!(matches!(e.kind, ConfigErrorKind::Unreadable(_)));
    assert!(e.to_string().contains("is a directory"), "{e}");

    let bad = dir.join("latin1.json");
    std::fs::write(&bad, b"{\"agent_id\":\"\xe9\"}").unwrap();
    set_private(&bad);
    let e = Config::load(&bad).unwrap_err();
    assert!(matches!(e.kind, ConfigErrorKind::Unreadable(_)));
    assert!(e.to_string().contains("UTF-8"), "{e}");

    let good = dir.join("config.json");
    write_private(&good, &minimal());
    let c = Config::load(&good).unwrap();
    assert_eq!(c.results_dir, dir.join("results"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shell_quoting_in_not_found() {
    let e = ConfigError {
        path: PathBuf::from("/my dir/it's.json"),
        kind: ConfigErrorKind::NotFound,
    };
    assert!(e
        .to_string()
        .contains(r"install -m 600 config.json.example '/my dir/it'\''s.json'"));
}

#[test]
fn invalid_json() {
    let text = "{\n  \"agent_id\": \"a1\",\n  \"token\": \"x\",\n}\n";
    let (kind, msg) = err(text);
    assert!(
        matches!(
            kind,
            ConfigErrorKind::InvalidJson {
                line: 4,
                column: 1,
                ..
            }
        ),
        "{kind:?}"
    );
    assert!(
        msg.starts_with("/srv/agent/config.json:4:1: invalid JSON: trailing comma\n"),
        "{msg}"
    );
    assert!(!msg.contains("at line"), "{msg}");
    assert!(msg.contains("help: remove the comma"), "{msg}");

    let (_, msg) = err("{\n  // my agent\n  \"agent_id\": \"a1\"\n}");
    assert!(
        msg.starts_with("/srv/agent/config.json:2:3: invalid JSON: key must be a string"),
        "{msg}"
    );
    assert!(msg.contains("JSON has no comments"), "{msg}");

    // Columns count characters, not bytes.
    let (kind, _) = err("{\"name\": \"é\" x}");
    assert!(
        matches!(
            kind,
            ConfigErrorKind::InvalidJson {
                line: 1,
                column: 14,
                ..
            }
        ),
        "{kind:?}"
    );

    let (_, msg) = err("");
    assert!(
        msg.contains("EOF while parsing") && msg.contains("ends too early"),
        "{msg}"
    );
    let (_, msg) = err(r#"{"results_dir": "C:\agent\results"}"#);
    assert!(msg.contains("Windows paths"), "{msg}");
}

#[test]
fn not_an_object() {
    let (kind, msg) = err("[1, 2]");
    assert!(matches!(kind, ConfigErrorKind::NotAnObject));
    assert!(
        msg.starts_with("/srv/agent/config.json: the file must hold one JSON object"),
        "{msg}"
    );
    assert!(msg.contains("config.json.example"), "{msg}");
}

#[test]
fn missing_and_empty() {
    let (kind, msg) = err(&without("hub_url"));
    assert!(matches!(kind, ConfigErrorKind::Missing { field: "hub_url" }));
    assert!(
        msg.starts_with("/srv/agent/config.json: required field `hub_url` is missing"),
        "{msg}"
    );
    assert!(msg.contains(r#""hub_url": "ws://hub.example:4000/ws""#), "{msg}");

    let (kind, msg) = err(&with("agent_id", "null"));
    assert!(matches!(kind, ConfigErrorKind::Missing { field: "agent_id" }));
    assert!(msg.contains(r#""agent_id": "my-agent""#), "{msg}");

    let (kind, msg) = err(&with("token", r#""  ""#));
    assert!(matches!(kind, ConfigErrorKind::Empty { field: "token" }));
    assert!(
        msg.starts_with("/srv/agent/config.json: field `token` is empty"),
        "{msg}"
    );
    assert!(msg.contains("mix agent_com.gen_token"), "{msg}");
}

#[test]
fn wrong_types() {
    let (kind, msg) = err(&with("capabilities", "3"));
    assert!(matches!(
        kind,
        ConfigErrorKind::WrongType {
            expected: "an array of strings",
            found: "a number",
            ..
        }
    ));
    assert!(
        msg.contains("field `capabilities` must be an array of strings, found a number"),
        "{msg}"
    );
    assert!(msg.contains(r#""capabilities": ["code"]"#), "{msg}");

    let (_, msg) = err(&with("capabilities", r#"["code", 7]"#));
    assert!(
        msg.contains("field `capabilities[1]` must be a string, found a number"),
        "{msg}"
    );

    let (_, msg) = err(&with("agent_id", "42"));
    assert!(
        msg.contains("field `agent_id` must be a string, found a number"),
        "{msg}"
    );

    // Every known key's hint has an example (cancel_command's was `...`).
    let (_, msg) = err(&with("cancel_command", "[]"));
    assert!(
        msg.contains("field `cancel_command` must be a string, found an array\nhelp: for example:\n    \"cancel_command\": \"openclaw system event --text \\\"AgentCom task ${TASK_ID} cancelled\\\" --mode now\""),
        "{msg}"
    );

    let (_, msg) = err(&with("wake_command", "true"));
    assert!(
        msg.contains("field `wake_command` must be a string, found a boolean"),
        "{msg}"
    );
}

#[test]
fn relay_settings_are_checked() {
    let (_, msg) = err(&with("wake_retry_delays_ms", "[5000, \"15s\"]"));
    assert!(msg.contains("wake_retry_delays_ms[1]"), "{msg}");
    let (_, msg) = err(&with("max_pending", "-1"));
    assert!(msg.contains("max_pending"), "{msg}");
    let c = Config::parse(&with("wake_retry_delays_ms", "[]"), &p()).unwrap();
    assert!(c.wake_retry_delays.is_empty());
    let c = Config::parse(&with("max_pending", "3"), &p()).unwrap();
    assert_eq!(c.max_pending, 3);
}

#[test]
fn durations() {
    let (_, msg) = err(&with("heartbeat_interval_ms", "1.5"));
    assert!(
        msg.contains(
            "field `heartbeat_interval_ms` must be a whole number of milliseconds, found a decimal number"
        ),
        "{msg}"
    );
    let (_, msg) = err(&with("reconnect_max_ms", r#""60000""#));
    assert!(
        msg.contains("field `reconnect_max_ms` must be a whole number of milliseconds, found a string"),
        "{msg}"
    );
    let (kind, msg) = err(&with("confirmation_timeout_ms", "-5"));
    assert!(matches!(kind, ConfigErrorKind::Invalid { ref field, .. } if field == "confirmation_timeout_ms"));
    assert!(
        msg.contains("field `confirmation_timeout_ms` is negative (-5)"),
        "{msg}"
    );
    let (_, msg) = err(&with("reconnect_initial_ms", "0"));
    assert!(
        msg.contains("field `reconnect_initial_ms` is 0, but it must be more than 0"),
        "{msg}"
    );
    let (_, msg) = err(&with("reconnect_initial_ms", "70000"));
    assert!(
        msg.contains("field `reconnect_initial_ms` (70000) must not be more than `reconnect_max_ms` (60000)"),
        "{msg}"
    );
    let (_, msg) = err(&with("heartbeat_timeout_ms", "30000"));
    assert!(
        msg.contains(
            "field `heartbeat_timeout_ms` (30000) must be less than `heartbeat_interval_ms` (30000)"
        ),
        "{msg}"
    );
    let (_, msg) = err(&with("heartbeat_interval_ms", "60000"));
    assert!(
        msg.contains("field `heartbeat_interval_ms` is 60000, but the hub drops"),
        "{msg}"
    );
    let (_, msg) = err(&with("confirmation_timeout_ms", "99999999999"));
    assert!(msg.contains("more than the largest accepted"), "{msg}");

    let c = Config::parse(&with("confirmation_timeout_ms", "0"), &p()).unwrap();
    assert_eq!(c.confirmation_timeout, Duration::from_millis(30_000));
    assert_eq!(c.warnings.len(), 1);
    assert!(c.warnings[0].contains("`confirmation_timeout_ms` is 0, which means the default"));
}

#[test]
fn task_timeout_and_agent_exit_grace() {
    let c = Config::parse(&with("task_timeout_ms", "600000"), &p()).unwrap();
    assert_eq!(c.task_timeout, Duration::from_secs(600));
    let c = Config::parse(&with("agent_exit_grace_ms", "5000"), &p()).unwrap();
    assert_eq!(c.agent_exit_grace, Duration::from_secs(5));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let (_, msg) = err(&with("task_timeout_ms", "0"));
    assert!(
        msg.contains("field `task_timeout_ms` is 0, but it must be more than 0")
            && msg.contains("the default, 7200000"),
        "{msg}"
    );
    let (_, msg) = err(&with("agent_exit_grace_ms", "-1"));
    assert!(
        msg.contains("field `agent_exit_grace_ms` is negative (-1)")
            && msg.contains(r#""agent_exit_grace_ms": 60000"#),
        "{msg}"
    );
    let (_, msg) = err(&with("task_timeout_ms", r#""2h""#));
    assert!(
        msg.contains("field `task_timeout_ms` must be a whole number of milliseconds, found a string")
            && msg.contains(r#""task_timeout_ms": 7200000"#),
        "{msg}"
    );
}

#[test]
fn type_errors_name_the_path_of_the_first_in_the_file() {
    // Nested: the item's index, and what it is.
    let (kind, msg) = err(&with("wake_retry_delays_ms", "[5000, 15000, [30000]]"));
    assert!(
        matches!(kind, ConfigErrorKind::WrongType { ref field, found: "an array", .. } if field == "wake_retry_delays_ms[2]"),
        "{kind:?}"
    );
    assert!(msg.starts_with("/srv/agent/config.json: field `wake_retry_delays_ms[2]` must be a whole number of milliseconds, found an array\n"), "{msg}");
    assert!(
        msg.contains(r#""wake_retry_delays_ms": [5000, 15000, 30000]"#),
        "{msg}"
    );
    let (_, msg) = err(&with("capabilities", r#"["code", {"x": 1}]"#));
    assert!(
        msg.contains("field `capabilities[1]` must be a string, found an object"),
        "{msg}"
    );
    // Two wrong types: the first in the file is named, whatever the keys' order in the schema.
    let text = without("wake_command").replace('}', r#","report_resources":"yes","name":7}"#);
    let (_, msg) = err(&text);
    assert!(
        msg.contains("field `report_resources` must be true or false, found a string"),
        "{msg}"
    );
    let text = without("wake_command").replace('}', r#","name":7,"report_resources":"yes"}"#);
    let (_, msg) = err(&text);
    assert!(
        msg.contains("field `name` must be a string, found a number"),
        "{msg}"
    );
    // Of duplicate keys the last is used, for types too.
    let text = minimal().replace('}', r#","max_pending":"x","max_pending":2}"#);
    assert_eq!(Config::parse(&text, &p()).unwrap().max_pending, 2);
    // A type error comes before the checks of values, such as a blank agent_id.
    let (_, msg) = err(&with("agent_id", r#""  ""#).replace('}', r#","log_keep":true}"#));
    assert!(
        msg.contains("field `log_keep` must be a whole number from 1 to 100, found a boolean"),
        "{msg}"
    );
}

#[test]
fn jitter() {
    assert_eq!(
        Config::parse(&with("reconnect_jitter", "1"), &p())
            .unwrap()
            .reconnect_jitter,
        1.0
    );
    let (_, msg) = err(&with("reconnect_jitter", "1.5"));
    assert!(
        msg.contains("field `reconnect_jitter` is 1.5, but it must be from 0.0 to 1.0"),
        "{msg}"
    );
    let (_, msg) = err(&with("reconnect_jitter", r#""0.5""#));
    assert!(
        msg.contains("field `reconnect_jitter` must be a number from 0.0 to 1.0, found a string"),
        "{msg}"
    );
}

#[test]
fn limits() {
    let (_, msg) = err(&with("agent_id", &format!("\"{}\"", "a".repeat(129))));
    assert!(
        msg.contains("field `agent_id` is too long: 129 characters, the hub accepts at most 128"),
        "{msg}"
    );
    assert!(Config::parse(&with("agent_id", &format!("\"{}\"", "é".repeat(128))), &p()).is_ok());
    let (_, msg) = err(&with("name", &format!("\"{}\"", "n".repeat(257))));
    assert!(msg.contains("field `name` is too long: 257 characters"), "{msg}");
    let (_, msg) = err(&with("agent_id", r#"" a1""#));
    assert!(msg.contains("field `agent_id` has spaces"), "{msg}");
    let (_, msg) = err(&with("capabilities", r#"["code", ""]"#));
    assert!(
        msg.contains("field `capabilities[1]` is an empty string"),
        "{msg}"
    );
}

#[test]
fn hub_urls() {
    for good in [
        "ws://127.0.0.1:4000/ws",
        "wss://hub.example.com/ws",
        "ws://[::1]:4000/ws",
        "WS://localhost:4000/ws?x=1",
    ] {
        let c = Config::parse(&with("hub_url", &format!("\"{good}\"")), &p());
        assert!(c.is_ok(), "{good}: {}", c.unwrap_err());
    }
    let cases = [
        ("http://h:4000", "use ws:// or wss://", "`ws://h:4000/ws`"),
        (
            "https://h.example/",
            "use ws:// or wss://",
            "`wss://h.example/ws`",
        ),
        ("h:4000/ws", "has no scheme", "`ws://h:4000/ws`"),
        ("localhost:4000", "has no scheme", "`ws://localhost:4000/ws`"),
        ("ftp://h/ws", "must be ws:// or wss://", "ws://HOST:4000/ws"),
        ("ws:///ws", "has no host", "wss://HOST/ws"),
        ("ws://h :4000/ws", "holds a space", "ws://HOST:4000/ws"),
        (
            "ws://[::g]:4000/ws",
            "is not an IPv6 address",
            "ws://[::1]:4000/ws",
        ),
        (
            "ws://h:99999/ws",
            "port must be a number from 1 to 65535",
            "ws://HOST:4000/ws",
        ),
        ("ws://h:4000/ws#x", "fragment", "ws://HOST:4000/ws"),
    ];
    for (url, what, hint) in cases {
        let (kind, msg) = err(&with("hub_url", &format!("\"{url}\"")));
        assert!(
            matches!(kind, ConfigErrorKind::Invalid { ref field, .. } if field == "hub_url"),
            "{url}"
        );
        assert!(msg.contains("field `hub_url`"), "{msg}");
        assert!(msg.contains(what), "{url}: {msg}");
        assert!(msg.contains(hint), "{url}: {msg}");
    }
    // User info is never echoed: it may hold a password.
    let (_, msg) = err(&with("hub_url", r#""ws://me:hunter2@h:4000/ws""#));
    assert!(
        msg.contains("must not hold a user name or password") && !msg.contains("hunter2"),
        "{msg}"
    );
    // No path: accepted with a warning.
    let c = Config::parse(&with("hub_url", r#""ws://h:4000""#), &p()).unwrap();
    assert!(
        c.warnings[0].contains("did you mean `ws://h:4000/ws`?"),
        "{:?}",
        c.warnings
    );
}

#[test]
fn token_is_never_shown() {
    let c = Config::parse(&minimal(), &p()).unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains(TOKEN), "{debug}");
    assert!(debug.contains("token: <redacted>"), "{debug}");
    assert_eq!(c.token.to_string(), "<redacted>");

    // A number as the token: its value is not printed.
    let (_, msg) = err(&with("token", "987654321987"));
    assert!(
        msg.contains("field `token` must be a string, found a number"),
        "{msg}"
    );
    assert!(!msg.contains("987654321987"), "{msg}");
    // A too-long token is not echoed.
    let long = "s3cr3t".repeat(50);
    let (_, msg) = err(&with("token", &format!("\"{long}\"")));
    assert!(msg.contains("field `token` is too long: 300 characters"), "{msg}");
    assert!(!msg.contains("s3cr3t"), "{msg}");
    // Nor one with stray spaces, nor one pasted into hub_url or used as a key.
    let (_, msg) = err(&with("token", "\"s3cr3t-value \""));
    assert!(!msg.contains("s3cr3t"), "{msg}");
    let (_, msg) = err(&with("hub_url", &format!("\"http://h/ws?token={TOKEN}\"")));
    assert!(msg.contains("<redacted>"), "{msg}");
    let c = Config::parse(&with(TOKEN, "1"), &p()).unwrap();
    assert!(!c.warnings.concat().contains(TOKEN), "{:?}", c.warnings);
    assert!(!format!("{c:?}").contains(TOKEN));
}

#[test]
fn default_path_uses_env() {
    std::env::remove_var(CONFIG_ENV);
    assert_eq!(default_config_path(), PathBuf::from("./config.json"));
    std::env::set_var(CONFIG_ENV, "");
    assert_eq!(default_config_path(), PathBuf::from("./config.json"));
    std::env::set_var(CONFIG_ENV, "/etc/agentcom/sidecar.json");
    assert_eq!(default_config_path(), PathBuf::from("/etc/agentcom/sidecar.json"));
    std::env::remove_var(CONFIG_ENV);
}

#[test]
fn example_file_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.json.example");
    let text = std::fs::read_to_string(&path).unwrap();
    let c = Config::parse(&text, &path).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.hub_url, "ws://127.0.0.1:4000/ws");
    assert_eq!(
        c.wake_command.as_deref(),
        Some(r#"openclaw system event --text "AgentCom task ${TASK_ID}: ${TASK_DESCRIPTION}" --mode now"#)
    );
    assert_eq!(c.confirmation_timeout, Duration::from_millis(30_000));
    assert_eq!(c.reconnect_jitter, 0.5);
}

/// A fresh folder under the temp dir for one test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agentcom-config-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `text` to `path`, readable and writable only by its owner.
fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    set_private(path);
}

fn set_private(path: &Path) {
    #[cfg(unix)]
    set_mode(path, 0o600);
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(unix)]
#[test]
fn insecure_permissions_are_refused() {
    let dir = temp_dir("permissions");
    let cfg = dir.join("config.json");
    let token_path = dir.join("token");
    write_private(&token_path, FILE_TOKEN);
    let strict = LoadOptions::default();
    let lax = LoadOptions {
        env_token: None,
        allow_insecure_permissions: true,
    };

    for (mode, shown, how) in [
        (0o644, "0644", "can be read by its group and by others"),
        (0o640, "0640", "can be read by its group (mode"),
        (0o606, "0606", "can be read and written by others"),
        (0o620, "0620", "can be written by its group"),
    ] {
        write_private(&cfg, &minimal());
        set_mode(&cfg, mode);
        let e = Config::load_with(&cfg, &strict).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e.kind, ConfigErrorKind::InsecurePermissions { ref file, mode: m } if *file == cfg && m == mode),
            "{msg}"
        );
        assert!(
            msg.starts_with(&format!("config file {} {how}", cfg.display())),
            "{msg}"
        );
        assert!(msg.contains(&format!("(mode {shown})")), "{msg}");
        assert!(
            msg.contains("anyone who can write it can run commands as the sidecar's user"),
            "{msg}"
        );
        assert!(msg.contains(&format!("chmod 600 {}", cfg.display())), "{msg}");
        assert!(msg.contains("--allow-insecure-permissions"), "{msg}");
        assert!(!msg.contains(TOKEN), "{msg}");
        // Allowed on request.
        assert!(Config::load_with(&cfg, &lax).is_ok());
    }
    // 0600 and 0400 pass; so does 0700 (the owner's bits are the owner's business).
    for mode in [0o600, 0o400, 0o700] {
        set_mode(&cfg, mode);
        assert!(Config::load_with(&cfg, &strict).is_ok(), "{mode:o}");
    }

    // The token file too, through load_with and parse_with alike.
    write_private(&cfg, &without("token").replace('}', r#","token_file":"token"}"#));
    assert_eq!(
        Config::load_with(&cfg, &strict).unwrap().token.expose(),
        FILE_TOKEN
    );
    set_mode(&token_path, 0o644);
    for e in [
        Config::load_with(&cfg, &strict).unwrap_err(),
        Config::parse_with(&std::fs::read_to_string(&cfg).unwrap(), &cfg, &strict).unwrap_err(),
    ] {
        let msg = e.to_string();
        assert!(
            matches!(e.kind, ConfigErrorKind::InsecurePermissions { ref file, mode: 0o644 } if *file == token_path),
            "{msg}"
        );
        assert!(
            msg.starts_with(&format!(
                "token file {} (the `token_file` of {})",
                token_path.display(),
                cfg.display()
            )),
            "{msg}"
        );
        assert!(msg.contains("(mode 0644)") && msg.contains("chmod 600"), "{msg}");
        assert!(!msg.contains(FILE_TOKEN), "{msg}");
    }
    assert_eq!(Config::load_with(&cfg, &lax).unwrap().token.expose(), FILE_TOKEN);
    // An environment token means the token file is not read, nor checked.
    let c = Config::load_with(
        &cfg,
        &LoadOptions {
            env_token: Some(ENV_TOKEN.into()),
            allow_insecure_permissions: false,
        },
    )
    .unwrap();
    assert_eq!(c.token_source, TokenSource::Environment);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn env(token: &str) -> LoadOptions {
    LoadOptions {
        env_token: Some(token.to_string()),
        allow_insecure_permissions: false,
    }
}

const FILE_TOKEN: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
const ENV_TOKEN: &str = "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1";

#[test]
fn token_file_is_read_trimmed_and_resolved() {
    let dir = temp_dir("token-file");
    write_private(&dir.join("token"), &format!("  {FILE_TOKEN}\n\n"));
    let cfg = dir.join("config.json");
    let text = without("token").replace('}', r#","token_file":"./token"}"#);
    let c = Config::parse(&text, &cfg).unwrap();
    assert_eq!(c.token.expose(), FILE_TOKEN);
    assert_eq!(c.token_source, TokenSource::File);
    assert_eq!(c.token_file, Some(dir.join("token")));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert!(!format!("{c:?}").contains(FILE_TOKEN));

    // Both present: the file wins, with one warning that names neither value.
    let text = with("token_file", r#""token""#);
    let c = Config::parse(&text, &cfg).unwrap();
    assert_eq!(c.token.expose(), FILE_TOKEN);
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(
        c.warnings[0].contains("the token from `token_file` (")
            && c.warnings[0].contains("is used; `token` is ignored"),
        "{:?}",
        c.warnings
    );
    assert!(!c.warnings[0].contains(FILE_TOKEN) && !c.warnings[0].contains(TOKEN));
    // "" is unset, as for the other paths.
    let c = Config::parse(&with("token_file", r#""""#), &cfg).unwrap();
    assert_eq!(c.token_source, TokenSource::Config);
    assert_eq!(c.token_file, None);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn env_token_wins() {
    let dir = temp_dir("env-token");
    write_private(&dir.join("token"), FILE_TOKEN);
    let cfg = dir.join("config.json");

    // Only the environment: `token` becomes optional.
    let c = Config::parse_with(&without("token"), &cfg, &env(ENV_TOKEN)).unwrap();
    assert_eq!(c.token.expose(), ENV_TOKEN);
    assert_eq!(c.token_source, TokenSource::Environment);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    let cases = [
        (minimal(), "`token` in the config is ignored"),
        (
            without("token").replace('}', r#","token_file":"token"}"#),
            "`token_file` in the config is ignored",
        ),
        (
            with("token_file", r#""token""#),
            "`token_file` and `token` in the config are ignored",
        ),
    ];
    for (text, ignored) in cases {
        let c = Config::parse_with(&text, &cfg, &env(&format!(" {ENV_TOKEN}\n"))).unwrap();
        assert_eq!(c.token.expose(), ENV_TOKEN);
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(
            c.warnings[0].contains("the token from the AGENTCOM_TOKEN environment variable is used")
                && c.warnings[0].contains(ignored),
            "{:?}",
            c.warnings
        );
        for secret in [TOKEN, FILE_TOKEN, ENV_TOKEN] {
            assert!(!c.warnings[0].contains(secret));
            assert!(!format!("{c:?}").contains(secret));
        }
    }
    // An empty or blank variable counts as unset.
    for blank in ["", "  "] {
        let c = Config::parse_with(&minimal(), &cfg, &env(blank)).unwrap();
        assert_eq!(c.token_source, TokenSource::Config);
        let e = Config::parse_with(&without("token"), &cfg, &env(blank)).unwrap_err();
        assert!(matches!(e.kind, ConfigErrorKind::Missing { field: "token" }));
        let msg = e.to_string();
        assert!(
            msg.contains("token_file") && msg.contains("AGENTCOM_TOKEN"),
            "{msg}"
        );
    }
    // A bad variable: named, not echoed.
    let bad = format!("{ENV_TOKEN}\n{ENV_TOKEN}");
    let e = Config::parse_with(&minimal(), &cfg, &env(&bad)).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e.kind, ConfigErrorKind::EnvToken { .. }));
    assert!(msg.contains("the AGENTCOM_TOKEN environment variable"), "{msg}");
    assert!(msg.contains(&cfg.display().to_string()), "{msg}");
    assert!(!msg.contains(ENV_TOKEN), "{msg}");
    // The overridden `token` is kept out of messages as well as the one in use.
    let ignored = "s3cr3t-config-token";
    let text = with("token", &format!("\"{ignored}\""));
    let e = Config::parse_with(
        &text.replace("ws://127.0.0.1:4000/ws", &format!("http://h/ws?t={ignored}")),
        &cfg,
        &env(ENV_TOKEN),
    )
    .unwrap_err();
    assert!(e.to_string().contains("<redacted>"), "{e}");
    assert!(!e.to_string().contains(ignored), "{e}");
    let text = text.replace('}', &format!(r#","{ignored}":1}}"#));
    let c = Config::parse_with(&text, &cfg, &env(ENV_TOKEN)).unwrap();
    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    assert!(!c.warnings.concat().contains(ignored), "{:?}", c.warnings);
    // Debug of the options does not show it either.
    assert!(!format!("{:?}", env(ENV_TOKEN)).contains(ENV_TOKEN));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn token_file_errors_name_the_file_and_the_fix() {
    let dir = temp_dir("token-file-errors");
    let cfg = dir.join("config.json");
    let text = without("token").replace('}', r#","token_file":"secret/token"}"#);
    let token_path = dir.join("secret/token");
    let shown = token_path.display().to_string();
    let check = |needles: &[&str]| {
        let e = Config::parse(&text, &cfg).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e.kind, ConfigErrorKind::Invalid { ref field, .. } if field == "token_file"),
            "{msg}"
        );
        assert!(
            msg.starts_with(&format!("{}: field `token_file`", cfg.display())),
            "{msg}"
        );
        assert!(msg.contains(&shown), "{msg}");
        for n in needles {
            assert!(msg.contains(n), "{n:?} in {msg}");
        }
        assert!(!msg.contains(FILE_TOKEN), "{msg}");
    };
    check(&["does not exist", "umask 077", "help:"]);
    std::fs::create_dir_all(&token_path).unwrap();
    check(&["is a folder"]);
    std::fs::remove_dir(&token_path).unwrap();
    write_private(&token_path, " \n\n");
    check(&["is empty", "mix agent_com.gen_token"]);
    write_private(&token_path, &format!("{FILE_TOKEN}\n{FILE_TOKEN}\n"));
    check(&["line break", "token alone"]);
    write_private(&token_path, &FILE_TOKEN.repeat(5));
    check(&["too long: 320 characters"]);
    std::fs::write(&token_path, b"\xff\xfe").unwrap();
    set_private(&token_path);
    check(&["not UTF-8"]);
    let (_, msg) = err(&with("token_file", "7"));
    assert!(
        msg.contains("field `token_file` must be a string, found a number"),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ca_file_and_log_and_resource_keys() {
    let c = Config::parse(&minimal(), &p()).unwrap();
    assert_eq!(c.ca_file, None);
    assert_eq!(c.log_max_bytes, 10_485_760);
    assert_eq!(c.log_keep, 5);
    assert!(c.report_resources);
    assert_eq!(c.token_source, TokenSource::Config);
    assert_eq!(c.token_file, None);

    let c = Config::parse(&with("ca_file", r#""certs/hub.pem""#), &p()).unwrap();
    assert_eq!(c.ca_file, Some(PathBuf::from("/srv/agent/certs/hub.pem")));
    let c = Config::parse(&with("ca_file", r#""/etc/ssl/ca.pem""#), &p()).unwrap();
    assert_eq!(c.ca_file, Some(PathBuf::from("/etc/ssl/ca.pem")));
    let c = Config::parse(&with("ca_file", "null"), &p()).unwrap();
    assert_eq!(c.ca_file, None);
    let (_, msg) = err(&with("ca_file", "true"));
    assert!(
        msg.contains("field `ca_file` must be a string, found a boolean"),
        "{msg}"
    );
    assert!(msg.contains(r#""ca_file": "/etc/agentcom/hub-ca.pem""#), "{msg}");

    let c = Config::parse(&with("log_max_bytes", "65536"), &p()).unwrap();
    assert_eq!(c.log_max_bytes, 65_536);
    let (_, msg) = err(&with("log_max_bytes", "65535"));
    assert!(
        msg.contains("field `log_max_bytes` is 65535, but it must be at least 65536"),
        "{msg}"
    );
    assert!(msg.contains("the default is 10485760"), "{msg}");
    let (_, msg) = err(&with("log_max_bytes", "-1"));
    assert!(msg.contains("field `log_max_bytes` is negative (-1)"), "{msg}");
    let (_, msg) = err(&with("log_max_bytes", r#""10M""#));
    assert!(
        msg.contains("field `log_max_bytes` must be a whole number of bytes, found a string"),
        "{msg}"
    );
    let (_, msg) = err(&with("log_max_bytes", "1e7"));
    assert!(msg.contains("found a decimal number"), "{msg}");

    for (v, n) in [("1", 1), ("100", 100)] {
        assert_eq!(Config::parse(&with("log_keep", v), &p()).unwrap().log_keep, n);
    }
    for bad in ["0", "101"] {
        let (_, msg) = err(&with("log_keep", bad));
        assert!(
            msg.contains(&format!(
                "field `log_keep` is {bad}, but it must be from 1 to 100"
            )),
            "{msg}"
        );
    }
    let (_, msg) = err(&with("log_keep", "2.5"));
    assert!(
        msg.contains("field `log_keep` must be a whole number from 1 to 100"),
        "{msg}"
    );

    assert!(
        !Config::parse(&with("report_resources", "false"), &p())
            .unwrap()
            .report_resources
    );
    let (_, msg) = err(&with("report_resources", r#""no""#));
    assert!(
        msg.contains("field `report_resources` must be true or false, found a string"),
        "{msg}"
    );
    assert!(msg.contains(r#""report_resources": true"#), "{msg}");
}

#[test]
fn edit_distance_works() {
    assert_eq!(strsim::osa_distance("hub_ulr", "hub_url"), 1);
    assert_eq!(strsim::osa_distance("tokn", "token"), 1);
    assert_eq!(strsim::osa_distance("", "abc"), 3);
    assert_eq!(suggest("Agent_ID"), Some("agent_id"));
    assert_eq!(suggest("hub_ws_url"), Some("hub_url"));
    assert_eq!(suggest("zzz"), None);
}

#[test]
fn every_known_key_is_in_the_schema() {
    // A key the schema lacked would be read as unknown and ignored: each known key (but `token`,
    // which is type-checked only when it is the one used) must be type-checked.
    for key in schema::KNOWN_KEYS {
        // And each has an example for hints.
        assert!(!error::example_line(key).ends_with("..."), "{key}");
        if *key == "token" {
            continue;
        }
        let pairs = schema::Pairs(vec![(key.to_string(), serde_json::json!({}))]);
        let kind = pairs.typed().err();
        assert!(
            matches!(kind, Some(ConfigErrorKind::WrongType { ref field, found: "an object", .. }) if field == key),
            "{key}: {kind:?}"
        );
    }
}

#[test]
fn direct_execution_keys_default_to_auto_and_no_hub_commands() {
    let c = Config::parse(&minimal(), &p()).unwrap();
    assert_eq!(c.direct_execution, DirectExecution::Auto);
    assert!(!c.allow_hub_commands);
    assert_eq!(c.ollama_url, None);
    assert_eq!(c.ollama_model, None);
    assert_eq!(c.claude_command, "claude");
    assert_eq!(c.claude_model, None);
    assert_eq!(c.execution_timeout, None);
}

#[test]
fn direct_execution_keys_are_read() {
    let mut v: serde_json::Map<String, Value> = serde_json::from_str(&minimal()).unwrap();
    for (k, val) in [
        ("direct_execution", json!("off")),
        ("allow_hub_commands", json!(true)),
        ("ollama_url", json!("http://10.0.0.5:11434/")),
        ("ollama_model", json!("qwen3:8b")),
        ("claude_command", json!("/opt/claude/bin/claude")),
        ("claude_model", json!("claude-sonnet-4.5")),
        ("execution_timeout_ms", json!(90000)),
    ] {
        v.insert(k.into(), val);
    }
    let c = Config::parse(&serde_json::to_string(&v).unwrap(), &p()).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.direct_execution, DirectExecution::Off);
    assert!(c.allow_hub_commands);
    assert_eq!(c.ollama_url.as_deref(), Some("http://10.0.0.5:11434"));
    assert_eq!(c.ollama_model.as_deref(), Some("qwen3:8b"));
    assert_eq!(c.claude_command, "/opt/claude/bin/claude");
    assert_eq!(c.claude_model.as_deref(), Some("claude-sonnet-4.5"));
    assert_eq!(c.execution_timeout, Some(Duration::from_millis(90000)));
    let on = Config::parse(&with("direct_execution", r#""on""#), &p()).unwrap();
    assert_eq!(on.direct_execution, DirectExecution::On);
}

#[test]
fn direct_execution_keys_teach_when_wrong() {
    let e = Config::parse(&with("direct_execution", r#""yes""#), &p())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("field `direct_execution` is \"yes\", but it must be \"auto\", \"on\" or \"off\""),
        "{e}"
    );
    let e = Config::parse(&with("allow_hub_commands", r#""true""#), &p())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("field `allow_hub_commands` must be true or false, found a string"),
        "{e}"
    );
    assert!(e.contains("\"allow_hub_commands\": false"), "{e}");
    let e = Config::parse(&with("ollama_url", r#""10.0.0.5:11434""#), &p())
        .unwrap_err()
        .to_string();
    assert!(e.contains("must be an http:// URL with a host"), "{e}");
    assert!(e.contains("http://127.0.0.1:11434"), "{e}");
    let long = format!("\"http://{}\"", "h".repeat(600));
    let e = Config::parse(&with("ollama_url", &long), &p())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("is too long: 607 characters, the hub accepts at most 512"),
        "{e}"
    );
    let e = Config::parse(&with("claude_command", r#""  ""#), &p())
        .unwrap_err()
        .to_string();
    assert!(e.contains("field `claude_command` is blank"), "{e}");
    let e = Config::parse(&with("execution_timeout_ms", "0"), &p())
        .unwrap_err()
        .to_string();
    assert!(e.contains("field `execution_timeout_ms` is 0"), "{e}");
    let e = Config::parse(&with("execution_timeout_ms", r#""1s""#), &p())
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"execution_timeout_ms\": 1800000"), "{e}");
}

#[test]
fn without_wake_command_the_warning_says_which_tasks_fail() {
    let c = Config::parse(&without("wake_command"), &p()).unwrap();
    assert!(
        c.warnings[0].ends_with(
            "no `wake_command`: every task the sidecar cannot carry out itself (see `direct_execution`) \
             will be failed with `no_wake_command_configured`"
        ),
        "{:?}",
        c.warnings
    );
    let mut v: serde_json::Map<String, Value> = serde_json::from_str(&without("wake_command")).unwrap();
    v.insert("direct_execution".into(), json!("off"));
    let c = Config::parse(&serde_json::to_string(&v).unwrap(), &p()).unwrap();
    assert!(
        c.warnings[0]
            .ends_with("no `wake_command`: every task will be failed with `no_wake_command_configured`"),
        "{:?}",
        c.warnings
    );
}
