//! The daemon: the one event loop, and the peers it feeds.
//!
//! [`run`] owns the loop. Each turn it carries out what the link policy and the peers ask for
//! (connect, send, close, log; the relay's frames and link holds; resource reports), brings the
//! state file up to date, ticks the systemd notifier, then waits in one `select!` for whichever
//! comes first: the stop signal, the earliest deadline of the policy and the peers, the hub
//! socket, or a task's news (the agent wrote a file, a runner reports on a run).
//!
//! A hub frame goes to the link policy, and, when it concerns tasks, to the relay first
//! ([`peers::relay_input`]); `restart_sidecar` ends the loop. What the relay asks of a task's run
//! (start, stop) goes to the runners (`crate::exec::Runners`, which picks the runner for the
//! task), and what a runner reports goes back to the relay. The link layer (`crate::link`)
//! only connects, reads and writes; the peers (`crate::relay`, `crate::exec`, `crate::status`,
//! `crate::service::notify`, `crate::resources`) know nothing of this loop, and the relay nothing
//! of the runners. With `ollama_url` set, a due `resource_report` waits for Ollama's VRAM figure,
//! fetched in the `select!` (never blocking the loop). See [`Peers`] for what each peer hears.

mod peers;

pub use peers::{link_healthy, relay_input, Peers};

use crate::event_log::EventLog;
use crate::link::policy::{Action, Input, LinkPolicy};
use crate::link::socket::{Connector, Socket, SocketEvent};
use crate::protocol::{Inbound, TaskFrame};
use crate::relay::machine::RelayInput;
use crate::relay::runtime::LinkRequest;
use std::future::Future;
use tokio::time::{sleep_until, Instant};

/// Why [`run`] returned.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    /// A stop signal.
    Stopped,
    /// The hub sent `restart_sidecar`.
    RestartRequested {
        /// The hub's reason.
        reason: String,
    },
}

/// What woke the loop up.
enum Woke {
    Shutdown(String),
    Timer,
    Socket(SocketEvent),
    Task(RelayInput),
    Vram(Option<u64>),
}

/// Ollama's `/api/ps` figure for a waiting `resource_report`, fetched in the loop's `select!`.
type VramQuery = std::pin::Pin<Box<dyn Future<Output = Option<u64>> + Send>>;

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// Run the sidecar until the link policy exits (after `shutdown` resolves with the signal's
/// name, or the hub sends `restart_sidecar`).
///
/// Without peers ([`Peers::default`]) the link runs alone (the link's tests).
pub async fn run<C: Connector>(
    mut policy: LinkPolicy,
    connector: C,
    hub_url: &str,
    log: &mut EventLog,
    shutdown: impl Future<Output = String>,
    mut peers: Peers<'_>,
) -> RunEnd {
    let mut end = RunEnd::Stopped;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut shutdown_seen = false;
    let mut socket = Socket::new(connector, hub_url);
    // A send may wait as long as a pong may: past that the hub is not reading.
    let send_timeout = policy.heartbeat_timeout();
    // At most one VRAM query in flight; dropping it (the loop's end) stops it.
    let mut vram: Option<VramQuery> = None;
    policy.start(now());
    loop {
        // Carry out the link's actions and the peers' sends until neither has more.
        loop {
            let mut busy = false;
            while let Some(action) = policy.poll_action() {
                busy = true;
                peers.on_action(&action, log);
                match action {
                    Action::Connect => socket.connect(),
                    Action::Send(frame) => {
                        if let Some(input) = socket.send(&frame, send_timeout).await {
                            policy.handle(input, now());
                        }
                    }
                    Action::Close { code, reason } => socket.close(code, reason).await,
                    Action::Abort => socket.abort(),
                    Action::Log(event) => log.record(&event),
                    Action::Up | Action::Down => {}
                    Action::Exit => {
                        peers.update_board(&policy);
                        return end;
                    }
                }
            }
            // What the relay asked of the runners before the loop started (a resumed task);
            // later requests are routed as soon as the relay makes them.
            peers.route_runs(log);
            for frame in peers.relay_sends() {
                busy = true;
                if let Some(input) = socket.send(&frame, send_timeout).await {
                    policy.handle(input, now());
                }
            }
            // queue.json cannot be written: the policy drops the link and stays away until the
            // relay's probe of the storage succeeds.
            for request in peers.link_requests() {
                busy = true;
                match request {
                    LinkRequest::Hold { reason } => policy.hold(&reason, now()),
                    LinkRequest::Release => policy.release(now()),
                }
            }
            if let Some(frame) = peers.resource_report(now()) {
                busy = true;
                if let Some(input) = socket.send(&frame, send_timeout).await {
                    policy.handle(input, now());
                }
            }
            if let Some(url) = peers.vram_query() {
                vram = Some(Box::pin(
                    async move { crate::exec::ollama::vram_used(&url).await },
                ));
            }
            if !busy {
                break;
            }
        }
        peers.update_board(&policy);

        let deadline = peers.deadline(&policy, now()).map(Instant::from_std);
        let wake = tokio::select! {
            signal = &mut shutdown, if !shutdown_seen => Woke::Shutdown(signal),
            () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => Woke::Timer,
            event = socket.next() => Woke::Socket(event),
            input = peers.next_task_input() => Woke::Task(input),
            used = async { vram.as_mut().expect("guarded").await }, if vram.is_some() => Woke::Vram(used),
        };
        match wake {
            Woke::Shutdown(signal) => {
                shutdown_seen = true;
                policy.handle(Input::Shutdown { signal }, now());
            }
            Woke::Timer => {
                policy.handle_timeout(now());
                peers.handle_timeout(log);
            }
            Woke::Socket(event) => {
                if event.is_hub_text() {
                    peers.hub_contact();
                }
                let Some(input) = socket.input(event).await else {
                    continue;
                };
                if let Input::Frame(Inbound::Task(TaskFrame::RestartSidecar { reason })) = &input {
                    // Everything is persisted as it changes: stop cleanly, then restart.
                    end = RunEnd::RestartRequested {
                        reason: reason.clone(),
                    };
                    policy.handle(
                        Input::Shutdown {
                            signal: format!("restart_sidecar from the hub ({reason})"),
                        },
                        now(),
                    );
                    continue;
                }
                if let Input::Frame(frame) = &input {
                    peers.on_frame(frame, log);
                }
                policy.handle(input, now());
            }
            Woke::Task(input) => peers.on_task_input(input, log),
            Woke::Vram(used) => {
                vram = None;
                peers.vram_answer(used);
            }
        }
    }
}

#[cfg(test)]
mod tests;
