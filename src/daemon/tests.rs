//! The daemon's own decisions, without a socket: the watchdog's health and frame routing.

use super::peers::OVERDUE_SLACK;
use super::*;
use crate::link::policy::LinkPolicy;
use crate::link::socket::CLOSE_GRACE;
use std::time::{Duration, Instant};

#[test]
fn healthy_while_identified_or_in_backoff_not_when_stuck_or_stopped() {
    use crate::link::backoff::BackoffSettings;
    use crate::link::policy::{Input, LinkSettings};
    use crate::protocol::{Identify, Inbound};
    let timeout = Duration::from_secs(10);
    let mut policy = LinkPolicy::new(
        LinkSettings {
            hub_url: "ws://127.0.0.1:1/ws".into(),
            identify: Identify {
                agent_id: "a1".into(),
                token: "t".into(),
                name: "a1".into(),
                status: "idle",
                capabilities: vec![],
                client_type: "sidecar",
                ollama_url: None,
            },
            heartbeat_interval: Duration::from_secs(30),
            heartbeat_timeout: timeout,
            backoff: BackoffSettings {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60),
                jitter: 0.0,
            },
        },
        1,
    );
    let t0 = Instant::now();
    let allowance = timeout + CLOSE_GRACE + OVERDUE_SLACK;
    policy.start(t0);
    assert!(link_healthy(&policy, t0), "connecting");
    // The connect deadline (t0 + 10 s) passed long ago without being acted on: stuck.
    assert!(!link_healthy(
        &policy,
        t0 + timeout + allowance + Duration::from_millis(1)
    ));
    // A hub outage: hours of failed connects, each in its designed backoff, stay healthy.
    let mut now = t0;
    for _ in 0..200 {
        policy.handle(
            Input::ConnectFailed {
                error: "refused".into(),
            },
            now,
        );
        now = policy.poll_timeout().unwrap();
        assert!(link_healthy(&policy, now), "in backoff");
        policy.handle_timeout(now);
    }
    assert!(now >= t0 + Duration::from_secs(3600));
    policy.handle(Input::Connected, now);
    policy.handle(
        Input::Frame(Inbound::Identified {
            agent_id: "a1".into(),
        }),
        now,
    );
    assert!(policy.is_identified());
    assert!(link_healthy(&policy, now + Duration::from_secs(29)), "identified");
    policy.handle(
        Input::Shutdown {
            signal: "SIGTERM".into(),
        },
        now,
    );
    assert!(!link_healthy(&policy, now), "stopped");
}

#[test]
fn task_frames_and_outcome_refusals_go_to_the_relay_connection_frames_do_not() {
    use crate::protocol::{parse_inbound, Inbound};
    let frame = |text: &str| parse_inbound(text).unwrap();
    let assign = frame(
        r#"{"type":"task_assign","task_id":"t1","description":"d","generation":1,"protocol_version":1}"#,
    );
    assert!(matches!(relay_input(&assign), Some(RelayInput::Frame(_))));
    let refused = frame(
        r#"{"type":"error","error":"validation_failed","message_type":"task_complete","protocol_version":1}"#,
    );
    assert_eq!(
        relay_input(&refused),
        Some(RelayInput::OutcomeRefused {
            reason: "validation_failed".into()
        })
    );
    assert!(matches!(
        frame(r#"{"type":"pong","protocol_version":1}"#),
        Inbound::Pong
    ));
    assert_eq!(
        relay_input(&frame(r#"{"type":"pong","protocol_version":1}"#)),
        None
    );
}
