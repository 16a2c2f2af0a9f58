//! Exhaustive, I/O-free tests of the connection policy.

use super::*;

const INTERVAL: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(10);

fn settings(jitter: f64) -> LinkSettings {
    LinkSettings {
        hub_url: "ws://127.0.0.1:4000/ws".into(),
        identify: Identify {
            agent_id: "a1".into(),
            token: "tok".into(),
            name: "a1".into(),
            status: "idle",
            capabilities: vec!["code".into()],
            client_type: "sidecar",
            ollama_url: None,
        },
        heartbeat_interval: INTERVAL,
        heartbeat_timeout: TIMEOUT,
        backoff: BackoffSettings {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            jitter,
        },
    }
}

struct Harness {
    policy: LinkPolicy,
    now: Instant,
}

impl Harness {
    fn new(jitter: f64, seed: u64) -> Harness {
        let mut h = Harness {
            policy: LinkPolicy::new(settings(jitter), seed),
            now: Instant::now(),
        };
        h.policy.start(h.now);
        h
    }

    fn drain(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.policy.poll_action()).collect()
    }

    fn input(&mut self, input: Input) -> Vec<Action> {
        self.policy.handle(input, self.now);
        self.drain()
    }

    /// Jump to the policy's next deadline and fire it; returns the wait and the actions.
    fn fire(&mut self) -> (Duration, Vec<Action>) {
        let at = self.policy.poll_timeout().expect("a deadline");
        let waited = at - self.now;
        self.now = at;
        self.policy.handle_timeout(at);
        (waited, self.drain())
    }

    fn identified(&mut self) {
        self.input(Input::Connected);
        self.input(Input::Frame(Inbound::Identified {
            agent_id: "a1".into(),
        }));
        assert!(self.policy.is_identified());
    }

    /// The delay of the reconnect the last actions scheduled.
    fn scheduled_delay(actions: &[Action]) -> Duration {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Log(Event::ReconnectScheduled { delay_ms, .. }) => {
                    Some(Duration::from_millis(*delay_ms))
                }
                _ => None,
            })
            .expect("a reconnect_scheduled event")
    }
}

fn ups_and_downs(actions: &[Action]) -> Vec<Action> {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Up | Action::Down))
        .cloned()
        .collect()
}

/// The actions that touch the socket (not logs, not Up/Down notices).
fn io(actions: &[Action]) -> Vec<Action> {
    actions
        .iter()
        .filter(|a| !matches!(a, Action::Log(_) | Action::Up | Action::Down))
        .cloned()
        .collect()
}

fn events(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Log(e) => Some(e.name()),
            _ => None,
        })
        .collect()
}

#[test]
fn start_connects_at_once_and_identifies_on_open() {
    let mut h = Harness::new(0.5, 1);
    let first = h.drain();
    assert_eq!(io(&first), vec![Action::Connect]);
    assert_eq!(events(&first), vec!["ws_connecting"]);
    let open = h.input(Input::Connected);
    assert_eq!(
        io(&open),
        vec![Action::Send(Outbound::Identify(settings(0.5).identify))]
    );
    assert_eq!(events(&open), vec!["ws_open", "identify_sent"]);
}

#[test]
fn heartbeat_pings_every_interval_and_pong_keeps_the_link() {
    let mut h = Harness::new(0.5, 1);
    h.drain();
    h.identified();
    for _ in 0..5 {
        let (waited, actions) = h.fire();
        assert_eq!(waited, INTERVAL);
        assert_eq!(io(&actions), vec![Action::Send(Outbound::Ping {})]);
        h.now += Duration::from_millis(5);
        assert!(h.input(Input::Frame(Inbound::Pong)).is_empty());
        h.now -= Duration::from_millis(5);
    }
}

#[test]
fn missing_pong_drops_the_link_after_the_timeout() {
    let mut h = Harness::new(0.5, 1);
    h.drain();
    h.identified();
    h.fire(); // ping
    let (waited, actions) = h.fire();
    assert_eq!(waited, TIMEOUT);
    assert_eq!(io(&actions), vec![Action::Abort]);
    assert_eq!(events(&actions), vec!["heartbeat_timeout", "reconnect_scheduled"]);
    assert!(matches!(
        actions[0],
        Action::Log(Event::HeartbeatTimeout {
            waiting_for: "pong",
            waited_ms: 10_000
        })
    ));
    // The first reconnect after a healthy session starts the schedule from the beginning.
    let delay = Harness::scheduled_delay(&actions);
    assert!(
        delay >= Duration::from_millis(500) && delay <= Duration::from_secs(1),
        "{delay:?}"
    );
}

#[test]
fn deadline_runs_from_the_oldest_unanswered_ping() {
    let mut s = settings(0.5);
    s.heartbeat_interval = Duration::from_secs(4);
    let mut h = Harness {
        policy: LinkPolicy::new(s, 1),
        now: Instant::now(),
    };
    h.policy.start(h.now);
    h.drain();
    h.identified();
    let t0 = h.now;
    let mut pings = 0;
    loop {
        let (_, actions) = h.fire();
        if io(&actions).contains(&Action::Abort) {
            break;
        }
        pings += 1;
    }
    // Pings at +4, +8, +12; the first one's deadline (+14) fires.
    assert_eq!(pings, 3);
    assert_eq!(h.now - t0, Duration::from_secs(14));
}

#[test]
fn backoff_sequence_stays_within_jitter_bounds() {
    for seed in 0..50 {
        let mut h = Harness::new(0.5, seed);
        h.drain();
        let nominal = [1, 2, 4, 8, 16, 32, 60, 60, 60, 60];
        for (i, secs) in nominal.iter().enumerate() {
            let actions = h.input(Input::ConnectFailed {
                error: "refused".into(),
            });
            let delay = Harness::scheduled_delay(&actions);
            let hi = Duration::from_secs(*secs);
            assert!(
                delay >= hi / 2 && delay <= hi,
                "seed {seed} attempt {i}: {delay:?} vs {hi:?}"
            );
            let (waited, next) = h.fire();
            assert_eq!(waited, delay);
            assert_eq!(io(&next), vec![Action::Connect]);
        }
    }
}

#[test]
fn zero_jitter_gives_the_nominal_schedule_and_full_jitter_spreads_to_zero() {
    let mut h = Harness::new(0.0, 3);
    h.drain();
    let got: Vec<u64> = (0..8)
        .map(|_| {
            let a = h.input(Input::ConnectFailed { error: "x".into() });
            h.fire();
            Harness::scheduled_delay(&a).as_secs()
        })
        .collect();
    assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60]);
    let mut h = Harness::new(1.0, 3);
    h.drain();
    let a = h.input(Input::ConnectFailed { error: "x".into() });
    assert!(Harness::scheduled_delay(&a) <= Duration::from_secs(1));
}

#[test]
fn schedule_resets_only_after_identified_not_on_open() {
    let mut h = Harness::new(0.0, 1);
    h.drain();
    // Open, then closed before identified, six times: the delay keeps doubling.
    let mut delays = vec![];
    for _ in 0..6 {
        h.input(Input::Connected);
        let a = h.input(Input::Closed {
            code: Some(1002),
            reason: String::new(),
        });
        delays.push(Harness::scheduled_delay(&a).as_secs());
        h.fire();
    }
    assert_eq!(delays, [1, 2, 4, 8, 16, 32]);
    // Once identified, the next drop starts from the first delay again.
    h.identified();
    let a = h.input(Input::Closed {
        code: Some(1000),
        reason: String::new(),
    });
    assert_eq!(Harness::scheduled_delay(&a), Duration::from_secs(1));
}

#[test]
fn auth_failure_closes_and_waits_the_capped_delay() {
    for (error, name) in [
        (HubError::InvalidToken, "invalid_token"),
        (HubError::TokenAgentMismatch, "token_agent_mismatch"),
    ] {
        for seed in 0..20 {
            let mut h = Harness::new(0.5, seed);
            h.drain();
            h.input(Input::Connected);
            let actions = h.input(Input::Frame(Inbound::Error(error.clone())));
            assert_eq!(
                io(&actions),
                vec![Action::Close {
                    code: 1000,
                    reason: "authentication failed".into()
                }]
            );
            match &actions[0] {
                Action::Log(Event::AuthFailed { error, hint }) => {
                    assert_eq!(error, name);
                    assert!(hint.contains("token"));
                }
                other => panic!("expected auth_failed, got {other:?}"),
            }
            let delay = Harness::scheduled_delay(&actions);
            assert!(
                delay >= Duration::from_secs(30) && delay <= Duration::from_secs(60),
                "{delay:?}"
            );
            // The close that follows our own close is not a second reconnect.
            assert!(h
                .input(Input::Closed {
                    code: Some(1000),
                    reason: String::new()
                })
                .is_empty());
            let (waited, next) = h.fire();
            assert_eq!(waited, delay);
            assert_eq!(io(&next), vec![Action::Connect]);
        }
    }
}

#[test]
fn cooldown_close_is_honoured() {
    for seed in 0..20 {
        let mut h = Harness::new(0.5, seed);
        h.drain();
        h.input(Input::Connected);
        let a = h.input(Input::Closed {
            code: Some(1008),
            reason: "cooldown active: retry in 30s".into(),
        });
        let delay = Harness::scheduled_delay(&a);
        assert!(
            delay >= Duration::from_secs(30) && delay <= Duration::from_secs(31),
            "{delay:?}"
        );
    }
    // A 1008 for another reason is an ordinary close.
    let mut h = Harness::new(0.0, 1);
    h.drain();
    h.input(Input::Connected);
    let a = h.input(Input::Closed {
        code: Some(1008),
        reason: "too many validation errors".into(),
    });
    assert_eq!(Harness::scheduled_delay(&a), Duration::from_secs(1));
}

#[test]
fn connect_and_identify_that_never_answer_count_as_dead_links() {
    let mut h = Harness::new(0.0, 1);
    h.drain();
    let (waited, a) = h.fire();
    assert_eq!(waited, TIMEOUT);
    assert_eq!(io(&a), vec![Action::Abort]);
    assert!(matches!(
        a[0],
        Action::Log(Event::HeartbeatTimeout {
            waiting_for: "connection",
            ..
        })
    ));
    h.fire(); // reconnect
    h.input(Input::Connected);
    let (waited, a) = h.fire();
    assert_eq!(waited, TIMEOUT);
    assert_eq!(io(&a), vec![Action::Abort]);
    assert!(matches!(
        a[0],
        Action::Log(Event::HeartbeatTimeout {
            waiting_for: "identified",
            ..
        })
    ));
}

#[test]
fn own_agent_left_triggers_identify_on_the_same_socket() {
    let mut h = Harness::new(0.0, 1);
    h.drain();
    h.identified();
    assert!(h
        .input(Input::Frame(Inbound::AgentLeft {
            agent_id: "other".into()
        }))
        .is_empty());
    let a = h.input(Input::Frame(Inbound::AgentLeft {
        agent_id: "a1".into(),
    }));
    assert_eq!(
        io(&a),
        vec![Action::Send(Outbound::Identify(settings(0.0).identify))]
    );
    h.input(Input::Frame(Inbound::Identified {
        agent_id: "a1".into(),
    }));
    assert!(h.policy.is_identified());
}

#[test]
fn not_identified_while_identified_identifies_again() {
    let mut h = Harness::new(0.0, 1);
    h.drain();
    h.identified();
    let a = h.input(Input::Frame(Inbound::Error(HubError::NotIdentified)));
    assert_eq!(
        io(&a),
        vec![Action::Send(Outbound::Identify(settings(0.0).identify))]
    );
}

#[test]
fn noise_is_logged_or_skipped_and_changes_nothing() {
    let mut h = Harness::new(0.0, 1);
    h.drain();
    h.identified();
    let deadline = h.policy.poll_timeout();
    assert!(h.input(Input::Frame(Inbound::RateLimitWarning)).is_empty());
    let informational = Inbound::Other {
        kind: "agent_joined".into(),
        frame: Default::default(),
    };
    assert!(h.input(Input::Frame(informational)).is_empty());
    let unknown = Inbound::Other {
        kind: "surprise".into(),
        frame: Default::default(),
    };
    assert_eq!(events(&h.input(Input::Frame(unknown))), vec!["unhandled_message"]);
    assert_eq!(
        events(&h.input(Input::BadFrame(FrameError::NotAnObject))),
        vec!["malformed_frame"]
    );
    let limited = Inbound::RateLimited {
        retry_after_ms: 1000,
        tier: "normal".into(),
    };
    assert_eq!(events(&h.input(Input::Frame(limited))), vec!["rate_limited"]);
    let err = Inbound::Error(HubError::Other("task_complete_failed: not_found".into()));
    assert_eq!(events(&h.input(Input::Frame(err))), vec!["hub_error"]);
    assert!(h.policy.is_identified());
    assert_eq!(h.policy.poll_timeout(), deadline);
}

#[test]
fn shutdown_closes_with_1000_and_exits() {
    let mut h = Harness::new(0.0, 1);
    h.drain();
    h.identified();
    let a = h.input(Input::Shutdown {
        signal: "SIGTERM".into(),
    });
    assert_eq!(
        io(&a),
        vec![
            Action::Close {
                code: 1000,
                reason: "shutdown".into()
            },
            Action::Exit
        ]
    );
    assert_eq!(events(&a), vec!["shutdown"]);
    assert!(h.policy.is_stopped());
    assert_eq!(h.policy.poll_timeout(), None);
    assert!(h
        .input(Input::Closed {
            code: Some(1000),
            reason: String::new()
        })
        .is_empty());

    // While waiting to reconnect there is nothing to close.
    let mut h = Harness::new(0.0, 1);
    h.drain();
    h.input(Input::ConnectFailed { error: "x".into() });
    let a = h.input(Input::Shutdown {
        signal: "SIGINT".into(),
    });
    assert_eq!(io(&a), vec![Action::Exit]);
}

#[test]
fn parses_cooldown_reasons() {
    assert_eq!(
        parse_cooldown("cooldown active: retry in 30s"),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        parse_cooldown("cooldown active: retry in 300s"),
        Some(Duration::from_secs(300))
    );
    assert_eq!(parse_cooldown("too many validation errors"), None);
    assert_eq!(parse_cooldown("cooldown active: retry in xs"), None);
}

#[test]
fn up_after_each_identified_and_down_once_when_the_link_goes() {
    let mut h = Harness::new(0.0, 1);
    h.drain();
    h.input(Input::Connected);
    let a = h.input(Input::Frame(Inbound::Identified {
        agent_id: "a1".into(),
    }));
    assert_eq!(ups_and_downs(&a), vec![Action::Up]);
    // Re-identify after our own agent_left: a second Up without a Down.
    h.input(Input::Frame(Inbound::AgentLeft {
        agent_id: "a1".into(),
    }));
    let a = h.input(Input::Frame(Inbound::Identified {
        agent_id: "a1".into(),
    }));
    assert_eq!(ups_and_downs(&a), vec![Action::Up]);
    let a = h.input(Input::Closed {
        code: Some(1000),
        reason: String::new(),
    });
    assert_eq!(ups_and_downs(&a), vec![Action::Down]);
    // A connection that never identified brings no Down.
    h.fire();
    h.input(Input::Connected);
    let a = h.input(Input::Closed {
        code: Some(1002),
        reason: String::new(),
    });
    assert!(ups_and_downs(&a).is_empty());
    // Heartbeat loss and shutdown bring a Down too.
    h.fire();
    h.identified();
    h.fire();
    let (_, a) = h.fire();
    assert_eq!(ups_and_downs(&a), vec![Action::Down]);
    h.fire();
    h.identified();
    let a = h.input(Input::Shutdown {
        signal: "SIGTERM".into(),
    });
    assert_eq!(ups_and_downs(&a), vec![Action::Down]);
}

#[test]
fn hold_closes_the_link_and_stays_away_until_released() {
    let mut h = Harness::new(0.5, 7);
    h.drain();
    h.identified();
    h.drain();
    h.policy
        .hold("queue.json cannot be written: No space left on device", h.now);
    let a = h.drain();
    assert_eq!(events(&a), ["link_held"]);
    assert_eq!(ups_and_downs(&a), [Action::Down]);
    assert_eq!(
        io(&a),
        [Action::Close {
            code: 1000,
            reason: "queue.json cannot be written: No space left on device".into()
        }]
    );
    assert!(h.policy.is_held());
    assert_eq!(h.policy.status().0, "held");
    // The hub's close answer, a late frame, and hours of timers: nothing connects.
    assert!(io(&h.input(Input::Closed {
        code: Some(1000),
        reason: String::new()
    }))
    .is_empty());
    for _ in 0..240 {
        let (waited, a) = h.fire();
        assert_eq!(waited, INTERVAL, "only the loop's own tick");
        assert!(a.is_empty(), "{a:?}");
    }
    // A second hold changes nothing; release connects at once.
    h.policy.hold("again", h.now);
    assert!(h.drain().is_empty());
    h.policy.release(h.now);
    let a = h.drain();
    assert_eq!(io(&a), [Action::Connect]);
    assert_eq!(events(&a), ["ws_connecting"]);
    h.identified();
    // Release when not held changes nothing.
    h.policy.release(h.now);
    assert!(h.drain().is_empty());
}

#[test]
fn hold_while_connecting_or_waiting_aborts_or_cancels_the_attempt() {
    let mut h = Harness::new(0.5, 8);
    h.drain();
    h.policy.hold("held while connecting", h.now);
    let a = h.drain();
    assert_eq!(io(&a), [Action::Abort]);
    assert!(ups_and_downs(&a).is_empty(), "never up: no Down");
    h.policy.release(h.now);
    h.drain();
    let a = h.input(Input::ConnectFailed {
        error: "refused".into(),
    });
    assert_eq!(events(&a), ["ws_connect_error", "reconnect_scheduled"]);
    h.policy.hold("held while waiting", h.now);
    assert!(io(&h.drain()).is_empty());
    let (_, a) = h.fire();
    assert!(
        !io(&a).contains(&Action::Connect),
        "the scheduled reconnect is cancelled"
    );
}

#[test]
fn shutdown_while_held_exits() {
    let mut h = Harness::new(0.5, 9);
    h.drain();
    h.identified();
    h.policy.hold("disk full", h.now);
    h.drain();
    let a = h.input(Input::Shutdown {
        signal: "SIGTERM".into(),
    });
    assert_eq!(io(&a), [Action::Exit]);
    assert!(h.policy.is_stopped());
}
