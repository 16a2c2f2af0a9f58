//! The connection policy as a sans-IO state machine: events in, actions out.
//!
//! [`LinkPolicy`] decides when to connect, what to send, when the link is dead and how long to
//! wait before the next attempt. It owns no socket and reads no clock: the caller passes `now`
//! with every input, asks [`LinkPolicy::poll_timeout`] when it next wants [`LinkPolicy::handle_timeout`],
//! and carries out the [`Action`]s it drains with [`LinkPolicy::poll_action`].

use super::backoff::{Backoff, BackoffSettings};
use crate::event_log::Event;
use crate::protocol::{FrameError, HubError, Identify, Inbound, Outbound};
use serde_json::json;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What the policy needs to know about this agent and its timers.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// The hub URL, for log lines.
    pub hub_url: String,
    /// The identify frame sent on every connection.
    pub identify: Identify,
    /// Time between JSON pings once identified.
    pub heartbeat_interval: Duration,
    /// How long a pong, a connect or an `identified` may take before the link counts as dead.
    pub heartbeat_timeout: Duration,
    /// The reconnect schedule.
    pub backoff: BackoffSettings,
}

/// Something that happened to the connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The WebSocket handshake completed.
    Connected,
    /// Connecting failed.
    ConnectFailed {
        /// Why, for the log.
        error: String,
    },
    /// A parsed frame from the hub.
    Frame(Inbound),
    /// A frame that could not be parsed.
    BadFrame(FrameError),
    /// The connection ended (close frame, error, or EOF).
    Closed {
        /// The close code, if the peer sent one.
        code: Option<u16>,
        /// The close reason or the error.
        reason: String,
    },
    /// SIGINT, SIGTERM, Ctrl+C or Ctrl+Break.
    Shutdown {
        /// Which signal, for the log.
        signal: String,
    },
}

/// Something the I/O shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Open a new WebSocket to the hub.
    Connect,
    /// Send a frame on the open WebSocket.
    Send(Outbound),
    /// Close the WebSocket politely with this code and reason, then forget it.
    Close {
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// Drop the connection (or the connect in flight) at once, without a close handshake.
    Abort,
    /// Record an event.
    Log(Event),
    /// The hub has (again) acknowledged our identity: task state may be reported.
    Up,
    /// The identified connection is gone: nothing can be sent until the next `Up`.
    Down,
    /// Stop: the policy is done.
    Exit,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    NotStarted,
    Waiting {
        until: Instant,
    },
    Connecting {
        since: Instant,
    },
    Identifying {
        since: Instant,
    },
    Identified {
        next_ping: Instant,
        ping_sent: Option<Instant>,
    },
    /// Disconnected on purpose (see [`LinkPolicy::hold`]) until [`LinkPolicy::release`]; `tick`
    /// is only a heartbeat of the driver's loop, so a watchdog sees it alive.
    Held {
        tick: Instant,
    },
    Stopped,
}

/// Frames the hub pushes to every identified socket; they need no action and no log line.
const INFORMATIONAL: &[&str] = &[
    "agent_joined",
    "status_changed",
    "message",
    "channel_message",
    "channel_agent_joined",
    "status_updated",
    "message_sent",
    "agents",
];

/// The connection state machine. See the module docs.
#[derive(Debug)]
pub struct LinkPolicy {
    settings: LinkSettings,
    backoff: Backoff,
    rng: fastrand::Rng,
    phase: Phase,
    actions: VecDeque<Action>,
    /// An `Up` was emitted on the current connection and no `Down` since.
    up: bool,
}

impl LinkPolicy {
    /// A policy that has not started; `seed` drives the jitter (tests pass a fixed one).
    pub fn new(settings: LinkSettings, seed: u64) -> LinkPolicy {
        LinkPolicy {
            backoff: Backoff::new(settings.backoff),
            settings,
            rng: fastrand::Rng::with_seed(seed),
            phase: Phase::NotStarted,
            actions: VecDeque::new(),
            up: false,
        }
    }

    /// Begin: the first connection attempt goes out at once.
    pub fn start(&mut self, now: Instant) {
        if self.phase == Phase::NotStarted {
            self.connect(now);
        }
    }

    /// True while the hub has acknowledged our identity on the current connection.
    pub fn is_identified(&self) -> bool {
        matches!(self.phase, Phase::Identified { .. })
    }

    /// The connection's state for `status`: its name, the attempt number, and when the next
    /// connection attempt is due (while waiting).
    pub fn status(&self) -> (&'static str, u32, Option<Instant>) {
        let attempt = self.backoff.failures() + 1;
        match self.phase {
            Phase::NotStarted => ("starting", attempt, None),
            Phase::Waiting { until } => ("waiting", attempt, Some(until)),
            Phase::Connecting { .. } => ("connecting", attempt, None),
            Phase::Identifying { .. } => ("identifying", attempt, None),
            Phase::Identified { .. } => ("identified", attempt, None),
            Phase::Held { .. } => ("held", attempt, None),
            Phase::Stopped => ("stopped", attempt, None),
        }
    }

    /// How long a pong, a connect or an `identified` may take.
    pub fn heartbeat_timeout(&self) -> Duration {
        self.settings.heartbeat_timeout
    }

    /// True once the policy has stopped for good.
    pub fn is_stopped(&self) -> bool {
        self.phase == Phase::Stopped
    }

    /// The next action to carry out, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When the policy next wants [`LinkPolicy::handle_timeout`] called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timeout = self.settings.heartbeat_timeout;
        match self.phase {
            Phase::Waiting { until } => Some(until),
            Phase::Connecting { since } | Phase::Identifying { since } => Some(since + timeout),
            Phase::Identified { next_ping, ping_sent } => {
                Some(ping_sent.map_or(next_ping, |sent| next_ping.min(sent + timeout)))
            }
            Phase::Held { tick } => Some(tick),
            Phase::NotStarted | Phase::Stopped => None,
        }
    }

    /// Drop the connection (or the connect in flight, or the wait for the next one) and do not
    /// connect again until [`LinkPolicy::release`]. For a sidecar that cannot keep what the hub
    /// would give it (queue.json cannot be written): on a disconnect the hub takes back the task
    /// it assigned without counting a retry, and assigns it elsewhere.
    pub fn hold(&mut self, reason: &str, now: Instant) {
        if matches!(self.phase, Phase::Held { .. } | Phase::Stopped) {
            return;
        }
        self.log(Event::LinkHeld {
            reason: reason.to_owned(),
        });
        self.down();
        match self.phase {
            Phase::Identifying { .. } | Phase::Identified { .. } => self.actions.push_back(Action::Close {
                code: 1000,
                reason: cut_reason(reason),
            }),
            Phase::Connecting { .. } => self.actions.push_back(Action::Abort),
            _ => {}
        }
        self.phase = Phase::Held {
            tick: now + self.settings.heartbeat_interval,
        };
    }

    /// End a [`LinkPolicy::hold`]: connect at once (the backoff is unchanged).
    pub fn release(&mut self, now: Instant) {
        if let Phase::Held { .. } = self.phase {
            self.connect(now);
        }
    }

    /// True while the link is held down by [`LinkPolicy::hold`].
    pub fn is_held(&self) -> bool {
        matches!(self.phase, Phase::Held { .. })
    }

    /// Act on every deadline that has passed by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let timeout = self.settings.heartbeat_timeout;
        match self.phase {
            Phase::Waiting { until } if now >= until => self.connect(now),
            Phase::Connecting { since } if now >= since + timeout => self.dead_link(now, "connection", since),
            Phase::Identifying { since } if now >= since + timeout => {
                self.dead_link(now, "identified", since)
            }
            Phase::Held { tick } if now >= tick => {
                self.phase = Phase::Held {
                    tick: now + self.settings.heartbeat_interval,
                };
            }
            Phase::Identified { next_ping, ping_sent } => {
                if let Some(sent) = ping_sent.filter(|sent| now >= *sent + timeout) {
                    return self.dead_link(now, "pong", sent);
                }
                if now >= next_ping {
                    self.send(Outbound::Ping {});
                    self.phase = Phase::Identified {
                        next_ping: now + self.settings.heartbeat_interval,
                        // Keep the oldest unanswered ping: the deadline runs from it.
                        ping_sent: ping_sent.or(Some(now)),
                    };
                }
            }
            _ => {}
        }
    }

    /// Feed one input.
    pub fn handle(&mut self, input: Input, now: Instant) {
        if self.phase == Phase::Stopped {
            return;
        }
        match input {
            Input::Connected => {
                if let Phase::Connecting { .. } = self.phase {
                    self.log(Event::WsOpen {
                        url: self.settings.hub_url.clone(),
                    });
                    self.identify(now, "new connection");
                }
            }
            Input::ConnectFailed { error } => {
                if let Phase::Connecting { .. } = self.phase {
                    self.log(Event::WsConnectError { error });
                    self.reconnect_later(now, "connect failed", None);
                }
            }
            Input::Frame(frame) => self.on_frame(frame, now),
            Input::BadFrame(error) => self.log(Event::MalformedFrame {
                error: error.to_string(),
            }),
            Input::Closed { code, reason } => {
                if self.is_connected() {
                    let cooldown = (code == Some(1008)).then(|| parse_cooldown(&reason)).flatten();
                    self.log(Event::WsClose { code, reason });
                    let why = if cooldown.is_some() {
                        "hub cooldown"
                    } else {
                        "connection closed"
                    };
                    self.reconnect_later(now, why, cooldown);
                }
            }
            Input::Shutdown { signal } => {
                self.log(Event::Shutdown { signal });
                self.down();
                match self.phase {
                    Phase::Identifying { .. } | Phase::Identified { .. } => {
                        self.actions.push_back(Action::Close {
                            code: 1000,
                            reason: "shutdown".into(),
                        })
                    }
                    Phase::Connecting { .. } => self.actions.push_back(Action::Abort),
                    _ => {}
                }
                self.phase = Phase::Stopped;
                self.actions.push_back(Action::Exit);
            }
        }
    }

    fn on_frame(&mut self, frame: Inbound, now: Instant) {
        match frame {
            Inbound::Identified { agent_id } => match self.phase {
                Phase::Identifying { .. } => {
                    self.backoff.reset();
                    self.log(Event::Identified {
                        hub_agent_id: agent_id,
                    });
                    self.phase = Phase::Identified {
                        next_ping: now + self.settings.heartbeat_interval,
                        ping_sent: None,
                    };
                    self.up = true;
                    self.actions.push_back(Action::Up);
                }
                _ => self.log(Event::UnhandledMessage {
                    message_type: "identified".into(),
                }),
            },
            Inbound::Pong => {
                if let Phase::Identified { next_ping, .. } = self.phase {
                    self.phase = Phase::Identified {
                        next_ping,
                        ping_sent: None,
                    };
                }
            }
            Inbound::Error(error @ (HubError::InvalidToken | HubError::TokenAgentMismatch)) => {
                if self.is_connected() {
                    self.auth_failed(error, now);
                }
            }
            Inbound::Error(HubError::NotIdentified) if self.is_identified() => {
                // The hub no longer knows this socket (it restarted its state, or a ghost took our
                // registration): identify again rather than wait for the pong deadline.
                self.log(Event::HubError {
                    error: "not_identified".into(),
                    detail: None,
                });
                self.identify(now, "hub said not_identified");
            }
            Inbound::Error(error) => {
                let detail = match &error {
                    HubError::ValidationFailed { message_type, errors } => {
                        Some(json!({"message_type": message_type, "errors": errors}))
                    }
                    _ => None,
                };
                self.log(Event::HubError {
                    error: error.code().to_owned(),
                    detail,
                });
            }
            Inbound::AgentLeft { agent_id } => {
                if self.is_identified() && agent_id == self.settings.identify.agent_id {
                    // Ghost connection (reference 2.3, C19): an older socket with our agent_id
                    // closed and took our registration with it. Identify again on this socket.
                    self.identify(now, "hub reported our own agent_left");
                }
            }
            Inbound::RateLimitWarning => {}
            Inbound::RateLimited { retry_after_ms, tier } => {
                self.log(Event::RateLimited { retry_after_ms, tier })
            }
            // Task frames belong to the relay; rate_limited is also the relay's business.
            Inbound::Task(_) => {}
            Inbound::Other { kind, .. } => {
                if !INFORMATIONAL.contains(&kind.as_str()) {
                    self.log(Event::UnhandledMessage { message_type: kind });
                }
            }
        }
    }

    fn is_connected(&self) -> bool {
        matches!(
            self.phase,
            Phase::Connecting { .. } | Phase::Identifying { .. } | Phase::Identified { .. }
        )
    }

    fn connect(&mut self, now: Instant) {
        self.log(Event::WsConnecting {
            url: self.settings.hub_url.clone(),
            attempt: self.backoff.failures() + 1,
        });
        self.actions.push_back(Action::Connect);
        self.phase = Phase::Connecting { since: now };
    }

    fn identify(&mut self, now: Instant, reason: &'static str) {
        self.send(Outbound::Identify(self.settings.identify.clone()));
        self.log(Event::IdentifySent { reason });
        self.phase = Phase::Identifying { since: now };
    }

    fn auth_failed(&mut self, error: HubError, now: Instant) {
        let hint = match error {
            HubError::TokenAgentMismatch => format!(
                "the token in the config belongs to another agent, not \"{}\": set agent_id to the agent the token was issued for, or ask the hub admin for a token for this agent_id",
                self.settings.identify.agent_id
            ),
            _ => "the hub does not know this token: check `token` in the config (copy it again from the hub admin, POST /admin/tokens)".to_owned(),
        };
        self.log(Event::AuthFailed {
            error: error.code().to_owned(),
            hint,
        });
        self.actions.push_back(Action::Close {
            code: 1000,
            reason: "authentication failed".into(),
        });
        let delay = self.backoff.capped_delay(self.rng.f64());
        self.schedule(now, delay, "authentication failed");
    }

    fn dead_link(&mut self, now: Instant, waiting_for: &'static str, since: Instant) {
        let waited_ms = now.saturating_duration_since(since).as_millis() as u64;
        self.log(Event::HeartbeatTimeout {
            waiting_for,
            waited_ms,
        });
        self.actions.push_back(Action::Abort);
        self.reconnect_later(now, "dead link", None);
    }

    fn reconnect_later(&mut self, now: Instant, reason: &str, at_least: Option<Duration>) {
        let mut delay = self.backoff.next_delay(self.rng.f64());
        if let Some(min) = at_least {
            // Honour the hub's cooldown, plus up to a second so a fleet spreads out.
            delay = delay.max(min + Duration::from_millis(self.rng.u64(0..=1000)));
        }
        self.schedule(now, delay, reason);
    }

    fn down(&mut self) {
        if std::mem::take(&mut self.up) {
            self.actions.push_back(Action::Down);
        }
    }

    fn schedule(&mut self, now: Instant, delay: Duration, reason: &str) {
        self.down();
        // Whole milliseconds: what is logged is exactly what is waited.
        let delay = Duration::from_millis(delay.as_millis() as u64);
        self.log(Event::ReconnectScheduled {
            delay_ms: delay.as_millis() as u64,
            attempt: self.backoff.failures() + 1,
            reason: reason.to_owned(),
        });
        self.phase = Phase::Waiting { until: now + delay };
    }

    fn send(&mut self, frame: Outbound) {
        self.actions.push_back(Action::Send(frame));
    }

    fn log(&mut self, event: Event) {
        self.actions.push_back(Action::Log(event));
    }
}

/// A WebSocket close reason fits in 123 bytes: cut at a character boundary.
fn cut_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

/// The N of a hub close reason "cooldown active: retry in Ns".
pub fn parse_cooldown(reason: &str) -> Option<Duration> {
    let rest = reason.strip_prefix("cooldown active: retry in ")?;
    let secs: u64 = rest.strip_suffix('s')?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests;
