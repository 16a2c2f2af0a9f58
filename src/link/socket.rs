//! The async shell around [`LinkPolicy`]: opens WebSockets, moves frames, keeps the timers.
//!
//! All decisions live in the policy; this file only carries out its [`Action`]s and turns what
//! happens on the socket into [`Input`]s. A [`Connector`] makes the WebSocket, so tests can hand
//! the driver in-memory streams and run it on tokio's paused clock; the network one is
//! [`super::connect::NetConnector`].

use super::policy::{Action, Input, LinkPolicy};
use crate::event_log::EventLog;
use crate::protocol::{self, FrameError, HubError, Inbound, Outbound, TaskFrame, MAX_FRAME_BYTES};
use crate::relay::machine::RelayInput;
use crate::relay::runtime::{LinkRequest, RelayRuntime};
use crate::resources::ResourceReporter;
use crate::service::notify::{self, Notifier};
use crate::status::StatusBoard;
use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// How long a polite close may wait for the hub's answer before the socket is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_millis(1000);

/// A future that yields a connected WebSocket or a reason for the log.
pub type ConnectFuture<S> =
    Pin<Box<dyn Future<Output = Result<WebSocketStream<S>, String>> + Send + 'static>>;

/// Opens WebSocket connections to the hub.
pub trait Connector {
    /// The byte stream under the WebSocket.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Start connecting to `url`.
    fn connect(&self, url: &str) -> ConnectFuture<Self::Stream>;
}

/// The WebSocket settings for the hub link: frames over [`MAX_FRAME_BYTES`] are refused.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
}

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

/// What woke the driver up. Short-lived, so the size of the `Connect` variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Wake<S> {
    Shutdown(String),
    Timer,
    Connect(Result<WebSocketStream<S>, String>),
    Socket(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    Relay(RelayInput),
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// What runs alongside the link, all optional: the task relay, the state file for `status`,
/// systemd's notifications, and `resource_report`s.
#[derive(Default)]
pub struct Companions<'a> {
    /// Task frames go to it, its frames go out on the link, and it hears the link go up and down.
    pub relay: Option<&'a mut RelayRuntime>,
    /// The state file follows the link and the tasks.
    pub board: Option<&'a mut StatusBoard>,
    /// `STATUS=` follows the link, `STOPPING=1` goes out on the stop signal, and `WATCHDOG=1` is
    /// sent from this loop while [`notify::link_healthy`] holds, so a wedged loop stops feeding it.
    pub notifier: Option<&'a mut Notifier>,
    /// `resource_report` frames while the link is identified.
    pub resources: Option<ResourceReporter>,
}

/// Run the link until the policy exits (after `shutdown` resolves with the signal's name).
///
/// Without companions the link runs alone (tests of the link); see [`Companions`].
pub async fn run<C: Connector>(
    mut policy: LinkPolicy,
    connector: C,
    hub_url: &str,
    log: &mut EventLog,
    shutdown: impl Future<Output = String>,
    companions: Companions<'_>,
) -> RunEnd {
    let Companions {
        mut relay,
        mut board,
        mut notifier,
        mut resources,
    } = companions;
    let mut end = RunEnd::Stopped;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut shutdown_seen = false;
    let mut ws: Option<WebSocketStream<C::Stream>> = None;
    let mut connecting: Option<ConnectFuture<C::Stream>> = None;
    // A send may wait as long as a pong may: past that the hub is not reading.
    let send_timeout = policy.heartbeat_timeout();
    policy.start(now());
    loop {
        // Carry out the link's actions and the relay's sends until neither has more.
        loop {
            let mut busy = false;
            while let Some(action) = policy.poll_action() {
                busy = true;
                if let Some(n) = notifier.as_deref_mut() {
                    n.on_action(&action);
                }
                match action {
                    Action::Connect => {
                        ws = None;
                        connecting = Some(connector.connect(hub_url));
                    }
                    Action::Send(frame) => send(&mut ws, &frame, send_timeout, &mut policy).await,
                    Action::Close { code, reason } => {
                        if let Some(sock) = ws.take() {
                            close_politely(sock, code, reason).await;
                        }
                        connecting = None;
                    }
                    Action::Abort => {
                        ws = None;
                        connecting = None;
                    }
                    Action::Log(event) => log.record(&event),
                    Action::Up => {
                        if let Some(reporter) = resources.as_mut() {
                            reporter.on_up(now());
                        }
                        if let Some(r) = relay.as_deref_mut() {
                            r.handle(RelayInput::LinkUp, log);
                        }
                    }
                    Action::Down => {
                        if let Some(reporter) = resources.as_mut() {
                            reporter.on_down();
                        }
                        if let Some(r) = relay.as_deref_mut() {
                            r.handle(RelayInput::LinkDown, log);
                        }
                    }
                    Action::Exit => {
                        if let Some(b) = board.as_deref_mut() {
                            let (tasks, outbox) =
                                relay.as_deref().map(RelayRuntime::snapshot).unwrap_or_default();
                            b.update(policy.status(), tasks, outbox);
                        }
                        return end;
                    }
                }
            }
            if let Some(r) = relay.as_deref_mut() {
                for frame in r.take_sends() {
                    busy = true;
                    send(&mut ws, &frame, send_timeout, &mut policy).await;
                }
                // queue.json cannot be written: the policy drops the link and stays away until
                // the relay's probe of the storage succeeds.
                for request in r.take_link_requests() {
                    busy = true;
                    match request {
                        LinkRequest::Hold { reason } => policy.hold(&reason, now()),
                        LinkRequest::Release => policy.release(now()),
                    }
                }
            }
            if let Some(frame) = resources.as_mut().and_then(|r| r.handle_timeout(now())) {
                busy = true;
                send(&mut ws, &frame, send_timeout, &mut policy).await;
            }
            if !busy {
                break;
            }
        }
        if let Some(b) = board.as_deref_mut() {
            let (tasks, outbox) = relay.as_deref().map(RelayRuntime::snapshot).unwrap_or_default();
            b.update(policy.status(), tasks, outbox);
        }

        let relay_deadline = relay.as_deref().and_then(RelayRuntime::poll_timeout);
        let resources_deadline = resources.as_ref().and_then(ResourceReporter::poll_timeout);
        let notifier_deadline = notifier.as_deref_mut().and_then(|n| {
            n.tick(now(), notify::link_healthy(&policy, now()));
            n.poll_timeout()
        });
        let deadline = [
            policy.poll_timeout(),
            relay_deadline,
            resources_deadline,
            notifier_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(Instant::from_std);
        let wake = tokio::select! {
            signal = &mut shutdown, if !shutdown_seen => Wake::Shutdown(signal),
            () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => Wake::Timer,
            result = async { connecting.as_mut().expect("guarded").await }, if connecting.is_some() => Wake::Connect(result),
            message = async { ws.as_mut().expect("guarded").next().await }, if ws.is_some() => Wake::Socket(message),
            input = async { relay.as_deref_mut().expect("guarded").next_input().await }, if relay.is_some() => Wake::Relay(input),
        };
        match wake {
            Wake::Shutdown(signal) => {
                shutdown_seen = true;
                policy.handle(Input::Shutdown { signal }, now());
            }
            Wake::Timer => {
                policy.handle_timeout(now());
                if let Some(r) = relay.as_deref_mut() {
                    r.handle_timeout(log);
                }
            }
            Wake::Connect(result) => {
                connecting = None;
                match result {
                    Ok(sock) => {
                        ws = Some(sock);
                        policy.handle(Input::Connected, now());
                    }
                    Err(error) => policy.handle(Input::ConnectFailed { error }, now()),
                }
            }
            Wake::Socket(message) => {
                if let (Some(b), Some(Ok(Message::Text(_)))) = (board.as_deref_mut(), &message) {
                    b.hub_contact();
                }
                if let Some(input) = socket_input(message, &mut ws).await {
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
                    if let (Some(r), Input::Frame(frame)) = (relay.as_deref_mut(), &input) {
                        if let Some(relay_input) = relay_input(frame) {
                            r.handle(relay_input, log);
                        }
                    }
                    policy.handle(input, now());
                }
            }
            Wake::Relay(input) => {
                if let Some(r) = relay.as_deref_mut() {
                    r.handle(input, log);
                }
            }
        }
    }
}

/// The part of a hub frame that concerns the relay, if any.
fn relay_input(frame: &Inbound) -> Option<RelayInput> {
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

/// Send one frame; a failed or stuck send ends the connection.
async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut Option<WebSocketStream<S>>,
    frame: &Outbound,
    send_timeout: Duration,
    policy: &mut LinkPolicy,
) {
    let Some(sock) = ws.as_mut() else { return };
    let failure = match timeout(send_timeout, sock.send(Message::text(frame.to_json()))).await {
        Ok(Ok(())) => return,
        Ok(Err(e)) => format!("send failed: {e}"),
        Err(_) => "send timed out: the hub is not reading".to_owned(),
    };
    *ws = None;
    policy.handle(
        Input::Closed {
            code: None,
            reason: failure,
        },
        now(),
    );
}

/// Turn what the socket produced into a policy input; drops the socket when it has ended.
async fn socket_input<S: AsyncRead + AsyncWrite + Unpin>(
    message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ws: &mut Option<WebSocketStream<S>>,
) -> Option<Input> {
    match message {
        Some(Ok(Message::Text(text))) => Some(match protocol::parse_inbound(text.as_str()) {
            Ok(frame) => Input::Frame(frame),
            Err(error) => Input::BadFrame(error),
        }),
        Some(Ok(Message::Binary(bytes))) => Some(Input::BadFrame(FrameError::NotJson(format!(
            "binary frame of {} bytes",
            bytes.len()
        )))),
        // tungstenite queues the pong itself; the next poll of the stream flushes it.
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => None,
        Some(Ok(Message::Close(frame))) => {
            let (code, reason) = match frame {
                Some(f) => (Some(u16::from(f.code)), f.reason.to_string()),
                None => (None, "closed without a code".to_owned()),
            };
            if let Some(mut sock) = ws.take() {
                // Send our close reply before dropping the stream.
                let _ = timeout(CLOSE_GRACE, sock.flush()).await;
            }
            Some(Input::Closed { code, reason })
        }
        Some(Err(e)) => {
            *ws = None;
            Some(Input::Closed {
                code: None,
                reason: e.to_string(),
            })
        }
        None => {
            *ws = None;
            Some(Input::Closed {
                code: None,
                reason: "connection ended".to_owned(),
            })
        }
    }
}

/// Send a close frame and wait briefly for the hub's answer; never longer than [`CLOSE_GRACE`].
async fn close_politely<S: AsyncRead + AsyncWrite + Unpin>(
    mut sock: WebSocketStream<S>,
    code: u16,
    reason: String,
) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = timeout(CLOSE_GRACE, async {
        if sock.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = sock.next().await {}
        }
    })
    .await;
}
