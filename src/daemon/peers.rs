//! The daemon's peers and what each one hears from the loop.

use crate::event_log::{Event, EventLog};
use crate::exec::{Runners, TaskRunner};
use crate::link::policy::{Action, LinkPolicy};
use crate::link::socket::CLOSE_GRACE;
use crate::protocol::{HubError, Inbound, Outbound};
use crate::relay::machine::RelayInput;
use crate::relay::runtime::{LinkRequest, RelayRuntime};
use crate::resources::ResourceReporter;
use crate::service::notify::Notifier;
use crate::status::StatusBoard;
use std::time::{Duration, Instant};

/// Slack on top of the link's own worst case (a send may block for the heartbeat timeout, a close
/// for [`CLOSE_GRACE`]) before an overdue deadline counts as stuck.
pub(super) const OVERDUE_SLACK: Duration = Duration::from_secs(5);

/// What runs alongside the link, all optional.
#[derive(Default)]
pub struct Peers<'a> {
    /// The task relay: task frames go to it, its frames go out on the link, it hears the link go
    /// up and down, and it may hold the link down while queue.json cannot be written. It watches
    /// the agents' files itself; what it asks of a task's run goes to the runners.
    pub relay: Option<&'a mut RelayRuntime>,
    /// Who runs the relay's tasks (`crate::exec`; today the agent waker): the loop routes the
    /// relay's requests (start, stop) to them and their answers back to the relay. Without
    /// runners, nothing runs the tasks.
    pub runners: Option<&'a mut Runners>,
    /// The state file for `status`: follows the link and the tasks, and every hub text frame.
    pub board: Option<&'a mut StatusBoard>,
    /// systemd: `STATUS=` follows the link, `STOPPING=1` goes out on the stop signal, and
    /// `WATCHDOG=1` is sent from this loop while [`link_healthy`] holds, so a wedged loop stops
    /// feeding it.
    pub notifier: Option<&'a mut Notifier>,
    /// `resource_report` frames while the link is identified.
    pub resources: Option<ResourceReporter>,
}

impl Peers<'_> {
    /// Tell the peers about an action the link policy emitted, before the loop carries it out:
    /// the notifier's `STATUS=`/`STOPPING=1`, and the link going up or down.
    pub(super) fn on_action(&mut self, action: &Action, log: &mut EventLog) {
        if let Some(n) = self.notifier.as_deref_mut() {
            notify_link_action(n, action);
        }
        match action {
            Action::Up => {
                if let Some(reporter) = self.resources.as_mut() {
                    reporter.on_up(super::now());
                }
                self.feed_relay(RelayInput::LinkUp, log);
            }
            Action::Down => {
                if let Some(reporter) = self.resources.as_mut() {
                    reporter.on_down();
                }
                self.feed_relay(RelayInput::LinkDown, log);
            }
            _ => {}
        }
    }

    /// The frames the relay wants sent now, in order.
    pub(super) fn relay_sends(&mut self) -> Vec<Outbound> {
        self.relay
            .as_deref_mut()
            .map(RelayRuntime::take_sends)
            .unwrap_or_default()
    }

    /// What the relay asks of the link (hold it down, release it), in order.
    pub(super) fn link_requests(&mut self) -> Vec<LinkRequest> {
        self.relay
            .as_deref_mut()
            .map(RelayRuntime::take_link_requests)
            .unwrap_or_default()
    }

    /// A `resource_report` when one is due.
    pub(super) fn resource_report(&mut self, now: Instant) -> Option<Outbound> {
        self.resources.as_mut().and_then(|r| r.handle_timeout(now))
    }

    /// The Ollama URL to ask for VRAM, when a due report waits for it (at most once per report).
    pub(super) fn vram_query(&mut self) -> Option<String> {
        self.resources
            .as_mut()
            .and_then(ResourceReporter::take_vram_query)
    }

    /// Ollama's VRAM figure for the waiting report (`None`: no answer).
    pub(super) fn vram_answer(&mut self, used: Option<u64>) {
        if let Some(r) = self.resources.as_mut() {
            r.vram_answer(used);
        }
    }

    /// Bring the state file up to date with the link and the tasks.
    pub(super) fn update_board(&mut self, policy: &LinkPolicy) {
        if let Some(b) = self.board.as_deref_mut() {
            let (tasks, outbox) = self
                .relay
                .as_deref()
                .map(RelayRuntime::snapshot)
                .unwrap_or_default();
            b.update(policy.status(), tasks, outbox);
        }
    }

    /// The hub sent a text frame.
    pub(super) fn hub_contact(&mut self) {
        if let Some(b) = self.board.as_deref_mut() {
            b.hub_contact();
        }
    }

    /// Send a due watchdog ping while the link is healthy, then return the earliest deadline of
    /// the policy and the peers.
    pub(super) fn deadline(&mut self, policy: &LinkPolicy, now: Instant) -> Option<Instant> {
        let relay = self.relay.as_deref().and_then(RelayRuntime::poll_timeout);
        let resources = self.resources.as_ref().and_then(ResourceReporter::poll_timeout);
        let notifier = self.notifier.as_deref_mut().and_then(|n| {
            n.tick(now, link_healthy(policy, now));
            n.poll_timeout()
        });
        [policy.poll_timeout(), relay, resources, notifier]
            .into_iter()
            .flatten()
            .min()
    }

    /// A deadline passed: the relay acts on its own.
    pub(super) fn handle_timeout(&mut self, log: &mut EventLog) {
        if let Some(r) = self.relay.as_deref_mut() {
            r.handle_timeout(log);
        }
        self.route_runs(log);
    }

    /// A hub frame, before the link policy sees it: the relay takes the part about tasks.
    pub(super) fn on_frame(&mut self, frame: &Inbound, log: &mut EventLog) {
        if let Some(input) = relay_input(frame) {
            self.feed_relay(input, log);
        }
    }

    /// The next thing that happened to a task: the agent wrote a file (the relay's watcher), or a
    /// runner reports on a run. Pending forever without either. Cancel-safe.
    pub(super) async fn next_task_input(&mut self) -> RelayInput {
        let relay = self.relay.as_deref_mut();
        let runners = self.runners.as_deref_mut();
        let files = async move {
            match relay {
                Some(r) => r.next_input().await,
                None => std::future::pending().await,
            }
        };
        let runs = async move {
            match runners {
                Some(r) => TaskRunner::next_input(r).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            input = files => input,
            input = runs => input,
        }
    }

    /// Something happened to a task: the relay decides what follows.
    pub(super) fn on_task_input(&mut self, input: RelayInput, log: &mut EventLog) {
        self.feed_relay(input, log);
    }

    /// Give the relay an input, then carry out what it asks of the runners.
    fn feed_relay(&mut self, input: RelayInput, log: &mut EventLog) {
        if let Some(r) = self.relay.as_deref_mut() {
            r.handle(input, log);
        }
        self.route_runs(log);
    }

    /// Route the relay's requests to the runners, oldest first, and feed back what a runner says
    /// at once (it may queue further requests).
    pub(super) fn route_runs(&mut self, log: &mut EventLog) {
        let Some(relay) = self.relay.as_deref_mut() else {
            return;
        };
        while let Some(request) = relay.take_run_request() {
            let Some(runners) = self.runners.as_deref_mut() else {
                continue;
            };
            for input in runners.handle(request) {
                relay.handle(input, log);
            }
        }
    }
}

/// The part of a hub frame that concerns the relay, if any.
pub fn relay_input(frame: &Inbound) -> Option<RelayInput> {
    match frame {
        Inbound::Task(task) => Some(RelayInput::Frame(task.clone())),
        Inbound::Error(HubError::OutcomeRefused { reason, .. }) => Some(RelayInput::OutcomeRefused {
            reason: reason.clone(),
        }),
        Inbound::Error(HubError::ValidationFailed { message_type, .. })
            if message_type == "task_complete" || message_type == "task_failed" =>
        {
            Some(RelayInput::OutcomeRefused {
                reason: "validation_failed".into(),
            })
        }
        Inbound::RateLimited { retry_after_ms, .. } => Some(RelayInput::RateLimited {
            retry_after: Duration::from_millis(*retry_after_ms),
        }),
        _ => None,
    }
}

/// Keep the notifier's `STATUS=` in step with what the link does (connecting, identified,
/// reconnecting in N s), and send `STOPPING=1` on a stop signal.
fn notify_link_action(n: &mut Notifier, action: &Action) {
    match action {
        Action::Log(Event::WsConnecting { url, attempt }) => {
            n.status(&format!("connecting to {url} (attempt {attempt})"))
        }
        Action::Log(Event::Identified { hub_agent_id }) => n.status(&format!("identified as {hub_agent_id}")),
        Action::Log(Event::AuthFailed { error, .. }) => {
            n.status(&format!("authentication failed ({error}): check the token"))
        }
        Action::Log(Event::ReconnectScheduled { delay_ms, reason, .. }) => n.status(&format!(
            "reconnecting in {:.1} s ({reason})",
            *delay_ms as f64 / 1000.0
        )),
        Action::Down => n.status("link down"),
        Action::Log(Event::Shutdown { signal }) => n.stopping(&format!("stopping ({signal})")),
        _ => {}
    }
}

/// Whether the watchdog may be fed: true while the link is identified or inside its designed
/// connect/backoff schedule, its own next deadline not overdue by more than the longest the loop
/// may legitimately be busy (a send blocked for the heartbeat timeout, plus a polite close, plus
/// slack). A hub outage keeps the link in a designed backoff forever, and that is healthy:
/// restarting would not bring the hub back. A stopped policy is not healthy.
pub fn link_healthy(policy: &LinkPolicy, now: Instant) -> bool {
    if policy.is_stopped() {
        return false;
    }
    let allowance = policy.heartbeat_timeout() + CLOSE_GRACE + OVERDUE_SLACK;
    match policy.poll_timeout() {
        Some(deadline) => now <= deadline + allowance,
        None => false,
    }
}
