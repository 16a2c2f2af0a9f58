//! The link driver against the embedded hub over in-memory streams, on tokio's paused clock:
//! backoff, reset, auth failure, cooldown and heartbeat timings measured exactly.

use agentcom_sidecar::daemon::{self, Peers};
use agentcom_sidecar::event_log::{Event, EventLog};
use agentcom_sidecar::hub::{EmbeddedHub, HubEvent, HubOptions};
use agentcom_sidecar::link::backoff::BackoffSettings;
use agentcom_sidecar::link::policy::{LinkPolicy, LinkSettings};
use agentcom_sidecar::link::socket::{websocket_config, ConnectFuture, Connector};
use agentcom_sidecar::protocol::Identify;
use agentcom_sidecar::resources::ResourceReporter;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::DuplexStream;
use tokio::time::{sleep, Instant};

const AGENT: &str = "agent-paused";

/// How the fake network behaves for the next connection attempts.
#[derive(Clone, Copy, PartialEq)]
enum Net {
    /// Connections reach the embedded hub.
    Hub,
    /// Connections are refused.
    Refused,
    /// The WebSocket opens, then the peer closes it at once (code 1002), before any identify.
    OpenThenClose,
    /// The TCP connect never completes (a black-holed SYN).
    Hang,
    /// The WebSocket opens, and the peer reads everything and answers nothing.
    Mute,
}

#[derive(Clone)]
struct TestConnector {
    hub: EmbeddedHub,
    net: Arc<Mutex<Net>>,
    attempts: Arc<Mutex<Vec<Instant>>>,
}

impl TestConnector {
    fn new(hub: &EmbeddedHub, net: Net) -> TestConnector {
        TestConnector {
            hub: hub.clone(),
            net: Arc::new(Mutex::new(net)),
            attempts: Default::default(),
        }
    }

    fn set(&self, net: Net) {
        *self.net.lock().unwrap() = net;
    }

    /// The gaps between consecutive connection attempts.
    fn gaps(&self) -> Vec<Duration> {
        let attempts = self.attempts.lock().unwrap();
        attempts.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

impl Connector for TestConnector {
    type Stream = DuplexStream;

    fn connect(&self, _url: &str) -> ConnectFuture<DuplexStream> {
        self.attempts.lock().unwrap().push(Instant::now());
        let net = *self.net.lock().unwrap();
        let hub = self.hub.clone();
        Box::pin(async move {
            let (client, server) = tokio::io::duplex(64 * 1024);
            match net {
                Net::Refused => return Err("connection refused".to_owned()),
                Net::Hang => std::future::pending::<()>().await,
                Net::Mute => {
                    tokio::spawn(async move {
                        use futures_util::StreamExt;
                        if let Ok(mut ws) = tokio_tungstenite::accept_async(server).await {
                            while let Some(Ok(_)) = ws.next().await {}
                        }
                    });
                }
                Net::Hub => hub.serve_stream(server),
                Net::OpenThenClose => {
                    tokio::spawn(async move {
                        if let Ok(mut ws) = tokio_tungstenite::accept_async(server).await {
                            use tokio_tungstenite::tungstenite::protocol::{
                                frame::coding::CloseCode, CloseFrame,
                            };
                            let frame = CloseFrame {
                                code: CloseCode::Protocol,
                                reason: "".into(),
                            };
                            let _ = ws.close(Some(frame)).await;
                        }
                    });
                }
            }
            let (ws, _) = tokio_tungstenite::client_async_with_config(
                "ws://127.0.0.1:4000/ws",
                client,
                Some(websocket_config()),
            )
            .await
            .map_err(|e| e.to_string())?;
            Ok(ws)
        })
    }
}

fn settings(token: &str, jitter: f64) -> LinkSettings {
    LinkSettings {
        hub_url: "ws://127.0.0.1:4000/ws".into(),
        identify: Identify {
            agent_id: AGENT.into(),
            token: token.into(),
            name: AGENT.into(),
            status: "idle",
            capabilities: vec!["code".into()],
            client_type: "sidecar",
            ollama_url: None,
        },
        heartbeat_interval: Duration::from_secs(30),
        heartbeat_timeout: Duration::from_secs(10),
        backoff: BackoffSettings {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            jitter,
        },
    }
}

/// The embedded hub, knowing `AGENT`'s token, and a connector to it that starts as `net`.
async fn hub_and_connector(net: Net) -> (EmbeddedHub, String, TestConnector) {
    let hub = EmbeddedHub::start(HubOptions::default()).await.unwrap();
    let token = hub.add_token(AGENT);
    let connector = TestConnector::new(&hub, net);
    (hub, token, connector)
}

/// The daemon's loop over `connector` with `peers`, for `for_how_long` of paused time, then
/// stopped; returns the events it logged. The one place that starts it.
async fn run_daemon(
    connector: TestConnector,
    policy: LinkPolicy,
    peers: Peers<'_>,
    for_how_long: Duration,
) -> Vec<Event> {
    let (mut log, captured) = EventLog::capture(AGENT);
    daemon::run(
        policy,
        connector,
        "ws://127.0.0.1:4000/ws",
        &mut log,
        async move {
            sleep(for_how_long).await;
            "test".to_owned()
        },
        peers,
    )
    .await;
    let events = captured.lock().unwrap().clone();
    events
}

/// Run the link for `for_how_long` of paused time, then stop it; returns the events it logged.
async fn run_link(
    connector: TestConnector,
    settings: LinkSettings,
    seed: u64,
    for_how_long: Duration,
) -> Vec<Event> {
    let policy = LinkPolicy::new(settings, seed);
    run_daemon(connector, policy, Peers::default(), for_how_long).await
}

fn in_range(d: Duration, lo_ms: u64, hi_ms: u64) -> bool {
    d >= Duration::from_millis(lo_ms) && d <= Duration::from_millis(hi_ms)
}

#[tokio::test(start_paused = true)]
async fn refused_connections_back_off_within_the_jitter_bounds() {
    let hub = EmbeddedHub::start(HubOptions::default()).await.unwrap();
    for seed in [1, 2, 3] {
        let connector = TestConnector::new(&hub, Net::Refused);
        run_link(
            connector.clone(),
            settings("t", 0.5),
            seed,
            Duration::from_secs(600),
        )
        .await;
        let gaps = connector.gaps();
        let nominal = [1, 2, 4, 8, 16, 32, 60, 60, 60, 60];
        assert!(gaps.len() >= nominal.len(), "only {} attempts", gaps.len() + 1);
        for (gap, secs) in gaps.iter().zip(nominal) {
            assert!(
                in_range(*gap, secs * 500, secs * 1000),
                "seed {seed}: gap {gap:?}, nominal {secs} s; all {gaps:?}"
            );
        }
        // Jitter spreads: not every gap sits on the nominal value.
        assert!(gaps
            .iter()
            .zip(nominal)
            .any(|(g, s)| *g != Duration::from_secs(s)));
    }
}

#[tokio::test(start_paused = true)]
async fn schedule_resets_only_after_identified() {
    let (hub, token, connector) = hub_and_connector(Net::OpenThenClose).await;
    let driver = connector.clone();
    let switch = async {
        // Opens that close before identify must not reset the schedule.
        sleep(Duration::from_secs(30)).await;
        driver.set(Net::Hub);
        sleep(Duration::from_secs(60)).await;
        // Identified by now. Drop the hub: the first delay is back to ~1 s.
        hub.stop().await;
        driver.set(Net::Refused);
    };
    let (events, ()) = tokio::join!(
        run_link(
            connector.clone(),
            settings(&token, 0.0),
            7,
            Duration::from_secs(100)
        ),
        switch
    );
    let delays: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::ReconnectScheduled { delay_ms, .. } => Some(*delay_ms),
            _ => None,
        })
        .collect();
    // 1+2+4+8+16 = 31 s of open-then-close: five doublings, then identified (no reset before).
    assert_eq!(&delays[..5], &[1000, 2000, 4000, 8000, 16_000], "{delays:?}");
    assert!(events.iter().any(|e| matches!(e, Event::Identified { .. })));
    let after_identified = events
        .iter()
        .skip_while(|e| !matches!(e, Event::Identified { .. }));
    let first_after = after_identified
        .filter_map(|e| match e {
            Event::ReconnectScheduled { delay_ms, .. } => Some(*delay_ms),
            _ => None,
        })
        .next();
    assert_eq!(first_after, Some(1000), "{delays:?}");
}

#[tokio::test(start_paused = true)]
async fn invalid_token_waits_the_capped_delay_between_attempts() {
    let (hub, _token, connector) = hub_and_connector(Net::Hub).await;
    let events = run_link(
        connector.clone(),
        settings("wrong-token", 0.5),
        11,
        Duration::from_secs(400),
    )
    .await;
    let gaps = connector.gaps();
    assert!(gaps.len() >= 5, "{gaps:?}");
    for gap in &gaps {
        assert!(
            in_range(*gap, 30_000, 60_000),
            "auth failure retried after {gap:?}: {gaps:?}"
        );
    }
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::AuthFailed { error, .. } if error == "invalid_token")));
    // The sidecar closed each unidentified socket itself, politely.
    let closes = hub
        .history()
        .iter()
        .filter(|e| {
            matches!(
                e,
                HubEvent::Closed {
                    code: Some(1000),
                    by_hub: false,
                    ..
                }
            )
        })
        .count();
    assert!(closes >= gaps.len(), "closes {closes}");
}

#[tokio::test(start_paused = true)]
async fn token_of_another_agent_is_an_auth_failure_too() {
    let (hub, _token, connector) = hub_and_connector(Net::Hub).await;
    let other = hub.add_token("someone-else");
    let events = run_link(
        connector.clone(),
        settings(&other, 0.5),
        5,
        Duration::from_secs(130),
    )
    .await;
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::AuthFailed { error, .. } if error == "token_agent_mismatch")));
    assert!(connector.gaps().iter().all(|g| in_range(*g, 30_000, 60_000)));
}

#[tokio::test(start_paused = true)]
async fn hub_cooldown_is_honoured() {
    let (hub, token, connector) = hub_and_connector(Net::Hub).await;
    // Earn a strike as this agent: 10 invalid frames on an identified socket.
    let (client, server) = tokio::io::duplex(64 * 1024);
    hub.serve_stream(server);
    let (mut ws, _) = tokio_tungstenite::client_async("ws://127.0.0.1:4000/ws", client)
        .await
        .unwrap();
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let identify = serde_json::json!({"type":"identify","agent_id":AGENT,"token":token}).to_string();
    ws.send(Message::text(identify)).await.unwrap();
    ws.next().await.unwrap().unwrap();
    for i in 0..10 {
        ws.send(Message::text(format!(r#"{{"type":"bogus_{i}"}}"#)))
            .await
            .unwrap();
    }
    while let Some(Ok(_)) = ws.next().await {}

    let events = run_link(
        connector.clone(),
        settings(&token, 0.5),
        3,
        Duration::from_secs(60),
    )
    .await;
    let gaps = connector.gaps();
    assert!(
        events.iter().any(|e| matches!(e, Event::WsClose { code: Some(1008), reason } if reason.starts_with("cooldown active"))),
        "{events:?}"
    );
    assert!(
        gaps[0] >= Duration::from_secs(30),
        "retried {:?} after a 30 s cooldown",
        gaps[0]
    );
    assert!(
        events.iter().any(|e| matches!(e, Event::Identified { .. })),
        "identified after the cooldown"
    );
}

#[tokio::test(start_paused = true)]
async fn silent_hub_is_detected_by_the_heartbeat() {
    let (hub, token, connector) = hub_and_connector(Net::Hub).await;
    hub.set_answer_pings(false);
    let events = run_link(
        connector.clone(),
        settings(&token, 0.5),
        3,
        Duration::from_secs(45),
    )
    .await;
    let timeout = events
        .iter()
        .find(|e| {
            matches!(
                e,
                Event::HeartbeatTimeout {
                    waiting_for: "pong",
                    ..
                }
            )
        })
        .expect("heartbeat_timeout");
    assert_eq!(
        timeout,
        &Event::HeartbeatTimeout {
            waiting_for: "pong",
            waited_ms: 10_000
        }
    );
    // Identified at 0, ping at 30 s, dropped at 40 s, reconnected within a second after.
    let gaps = connector.gaps();
    assert!(in_range(gaps[0], 40_500, 41_000), "{gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn healthy_link_stays_up_with_one_ping_per_interval() {
    let (hub, token, connector) = hub_and_connector(Net::Hub).await;
    let events = run_link(
        connector.clone(),
        settings(&token, 0.5),
        3,
        Duration::from_secs(301),
    )
    .await;
    assert_eq!(
        connector.gaps().len(),
        0,
        "one connection for the whole run: {events:?}"
    );
    let pings = hub
        .history()
        .iter()
        .filter(|e| matches!(e, HubEvent::Received { text, .. } if text.contains(r#""type":"ping""#)))
        .count();
    assert_eq!(pings, 10);
}

#[tokio::test(start_paused = true)]
async fn own_agent_left_makes_the_sidecar_identify_again() {
    let (hub, token, connector) = hub_and_connector(Net::Hub).await;
    let pusher = async {
        sleep(Duration::from_secs(5)).await;
        hub.push(AGENT, serde_json::json!({"type":"agent_left","agent_id":AGENT}))
            .await
            .unwrap();
    };
    let (events, ()) = tokio::join!(
        run_link(
            connector.clone(),
            settings(&token, 0.5),
            3,
            Duration::from_secs(10)
        ),
        pusher
    );
    let identifies = events
        .iter()
        .filter(|e| matches!(e, Event::IdentifySent { .. }))
        .count();
    assert_eq!(identifies, 2, "{events:?}");
    assert_eq!(connector.gaps().len(), 0, "same socket");
}

#[tokio::test(start_paused = true)]
async fn a_connect_that_never_completes_is_abandoned_after_the_timeout() {
    let (_hub, _token, connector) = hub_and_connector(Net::Hang).await;
    let events = run_link(connector.clone(), settings("t", 0.0), 1, Duration::from_secs(40)).await;
    // 10 s timeout, then 1 s, 10 s, 2 s, 10 s, 4 s: attempts at 0, 11, 23, 37.
    let gaps = connector.gaps();
    assert_eq!(gaps, [11, 12, 14].map(Duration::from_secs), "{events:?}");
    assert!(events.iter().any(|e| matches!(
        e,
        Event::HeartbeatTimeout {
            waiting_for: "connection",
            waited_ms: 10_000
        }
    )));
}

#[tokio::test(start_paused = true)]
async fn an_identify_that_gets_no_answer_is_a_dead_link() {
    let (_hub, _token, connector) = hub_and_connector(Net::Mute).await;
    let events = run_link(connector.clone(), settings("t", 0.0), 1, Duration::from_secs(25)).await;
    assert_eq!(connector.gaps(), [11, 12].map(Duration::from_secs));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::HeartbeatTimeout {
            waiting_for: "identified",
            waited_ms: 10_000
        }
    )));
}

/// The `resource_report` frames the hub received, with when each arrived.
fn resource_reports(hub: &EmbeddedHub) -> Vec<(Instant, serde_json::Value)> {
    hub.history()
        .into_iter()
        .filter_map(|e| match e {
            HubEvent::Received { at, text, .. } => {
                let v: serde_json::Value = serde_json::from_str(&text).ok()?;
                (v["type"] == "resource_report").then_some((at, v))
            }
            _ => None,
        })
        .collect()
}

/// When the hub identified each connection.
fn identified_at(hub: &EmbeddedHub) -> Vec<Instant> {
    hub.history()
        .into_iter()
        .filter_map(|e| match e {
            HubEvent::Identified { at, .. } => Some(at),
            _ => None,
        })
        .collect()
}

/// Every error frame the hub sent.
fn hub_errors(hub: &EmbeddedHub) -> Vec<String> {
    hub.history()
        .into_iter()
        .filter_map(|e| match e {
            HubEvent::Sent { text, .. } if text.contains(r#""type":"error""#) => Some(text),
            _ => None,
        })
        .collect()
}

async fn run_reporting(connector: TestConnector, token: &str, enabled: bool, for_how_long: Duration) {
    let peers = Peers {
        resources: Some(ResourceReporter::system(AGENT, enabled)),
        ..Peers::default()
    };
    let policy = LinkPolicy::new(settings(token, 0.0), 9);
    run_daemon(connector, policy, peers, for_how_long).await;
}

#[tokio::test(start_paused = true)]
async fn resource_reports_reach_the_hub_5_s_after_identified_then_every_30_s() {
    let (hub, token, connector) = hub_and_connector(Net::Hub).await;
    run_reporting(connector, &token, true, Duration::from_secs(100)).await;
    // The hub's schema accepted every report: no validation_failed (or any error) came back.
    assert_eq!(hub_errors(&hub), Vec::<String>::new());

    let identified = identified_at(&hub);
    assert_eq!(identified.len(), 1);
    let reports = resource_reports(&hub);
    let offsets: Vec<Duration> = reports.iter().map(|(at, _)| *at - identified[0]).collect();
    let secs = |s: u64| Duration::from_secs(s);
    assert_eq!(offsets.len(), 4, "{offsets:?}");
    for (offset, expected) in offsets.iter().zip([5, 35, 65, 95]) {
        assert!(
            in_range(*offset, expected * 1000, expected * 1000 + 50),
            "{offsets:?} (expected about {:?})",
            secs(expected)
        );
    }
    // Every field as Node sends it.
    let (_, frame) = &reports[0];
    assert_eq!(frame["agent_id"], AGENT);
    assert_eq!(frame["protocol_version"], 1);
    assert!(frame["vram_used_bytes"].is_null() && frame["vram_total_bytes"].is_null());
    assert!(frame.get("vram_used_bytes").is_some() && frame.get("vram_total_bytes").is_some());
    assert!(frame["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    if cfg!(target_os = "linux") {
        let cpu = frame["cpu_percent"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&cpu));
        assert!(frame["ram_used_bytes"].as_u64().unwrap() <= frame["ram_total_bytes"].as_u64().unwrap());
    }
}

#[tokio::test(start_paused = true)]
async fn resource_reports_stop_while_down_and_restart_5_s_after_identified_again() {
    let (hub, token, connector) = hub_and_connector(Net::Hub).await;
    let driver = connector.clone();
    let outage = async {
        // Identified at about 0 s; reports at 5 and 35 s. Down at 50 s for a while.
        sleep(Duration::from_secs(50)).await;
        driver.set(Net::Refused);
        hub.stop().await;
        sleep(Duration::from_secs(60)).await;
        hub.restart().await.unwrap();
        driver.set(Net::Hub);
    };
    let ((), ()) = tokio::join!(
        run_reporting(connector, &token, true, Duration::from_secs(200)),
        outage
    );
    let identified = identified_at(&hub);
    assert_eq!(identified.len(), 2, "identified twice");
    let reports: Vec<Instant> = resource_reports(&hub).into_iter().map(|(at, _)| at).collect();
    let (first, second): (Vec<Instant>, Vec<Instant>) = reports.iter().partition(|at| **at < identified[1]);
    assert_eq!(first.len(), 2, "before the outage: {first:?}");
    assert!(
        first
            .iter()
            .all(|at| *at < identified[0] + Duration::from_secs(50)),
        "nothing sent while down"
    );
    let after: Vec<Duration> = second.iter().map(|at| *at - identified[1]).collect();
    assert!(!after.is_empty());
    assert!(in_range(after[0], 5000, 5050), "{after:?}");
    assert_eq!(hub_errors(&hub), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn no_resource_report_when_disabled() {
    let (hub, token, connector) = hub_and_connector(Net::Hub).await;
    run_reporting(connector, &token, false, Duration::from_secs(100)).await;
    assert_eq!(identified_at(&hub).len(), 1);
    assert!(resource_reports(&hub).is_empty());
}
