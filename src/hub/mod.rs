//! An embedded AgentCom hub that plays the real hub's side of the `/ws` protocol, frame for
//! frame as recorded in `shared/hub-transcripts/`. Used by tests, `demo` and `try`.
//!
//! Besides the connection side (identify, validation, violations, rate limits, presence and
//! pushes) it runs the real hub's task side: a FIFO task queue with generation fencing, a
//! scheduler matching capabilities, per-agent state machines, reclaims on disconnect, the
//! acceptance timer and the stuck sweep (see [`TaskSpec`], [`EmbeddedHub::submit_task`]), the
//! TaskQueue's overdue sweep and the scheduler's TTL sweep (`sweeps.rs`).
//! On the same port it serves the real hub's HTTP API (§7: tasks, onboarding, tokens, classify;
//! `http.rs`, `api.rs`, `api_tasks.rs`, `api_gate.rs`), whose handlers share the handle's
//! state functions.
//!
//! It shares no parsing or protocol code with the sidecar: it works on raw JSON values and its
//! own schema table ([`schema`]). Single-threaded friendly: every timer is a `tokio::time` one,
//! so tests can run it on a paused clock through [`EmbeddedHub::serve_stream`].

mod api;
mod api_gate;
mod api_tasks;
mod complexity;
mod conn;
mod http;
mod llm;
mod llm_health;
mod rate;
mod risk;
mod scheduler;
pub mod schema;
mod session;
mod spec;
mod state;
mod sweeps;
mod task_api;
mod tasks;
mod validate;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use state::{ConnCmd, ConnEntry, State};
pub use tasks::{AgentState, TaskRecord, TaskSpec};

/// Timers and limits of the hub; `Default` gives the real hub's values.
#[derive(Clone, Debug)]
pub struct HubOptions {
    /// Close a socket (1002 "") when no frame was received for this long.
    pub idle_timeout: Duration,
    /// The reaper drops an identified agent whose last JSON ping is older than this.
    pub reaper_ttl: Duration,
    /// How often the reaper sweeps.
    pub reaper_interval: Duration,
    /// The validation failure that closes the socket (1008), counted per connection.
    pub violation_limit: u32,
    /// The window in which violations are counted.
    pub violation_window: Duration,
    /// Cooldowns after the 1st, 2nd, 3rd and later strikes (the last one repeats).
    pub cooldowns: Vec<Duration>,
    /// An assignment not accepted within this is reclaimed (and the agent flagged unresponsive).
    pub acceptance_timeout: Duration,
    /// How often the stuck sweep runs.
    pub stuck_sweep_interval: Duration,
    /// The stuck sweep reclaims an assigned task whose `updated_at` is older than this...
    pub stuck_after: Duration,
    /// ...or older than this when the holder's FSM is `working`.
    pub stuck_after_working: Duration,
    /// How often the overdue sweep reclaims assigned tasks past their `complete_by` (30 s).
    pub overdue_sweep_interval: Duration,
    /// How often the TTL sweep runs (60 s).
    pub ttl_sweep_interval: Duration,
    /// The hub config's `task_ttl_ms` (10 min): the TTL sweep dead-letters a queued,
    /// non-trivial task submitted longer ago than this, as `ttl_expired`.
    pub task_ttl: Duration,
    /// How often the LLM registry probes every endpoint's `GET /api/tags` (30 s).
    pub llm_probe_interval: Duration,
    /// How long one probe may take (5 s).
    pub llm_probe_timeout: Duration,
    /// The hub config's `default_repo` at start (`GET /api/config/default-repo`, the onboarding
    /// answer); None by default. Changed at run time by `PUT` or [`EmbeddedHub::set_default_repo`].
    pub default_repo: Option<String>,
    /// The hub config flag `risk_auto_merge_tier1` (false, as on the real hub): tier 1
    /// classifications say `auto_merge_eligible: true` only with it.
    pub risk_auto_merge_tier1: bool,
}

impl Default for HubOptions {
    fn default() -> Self {
        HubOptions {
            idle_timeout: Duration::from_secs(60),
            reaper_ttl: Duration::from_secs(60),
            reaper_interval: Duration::from_secs(30),
            violation_limit: 10,
            violation_window: Duration::from_secs(60),
            cooldowns: vec![
                Duration::from_secs(30),
                Duration::from_secs(60),
                Duration::from_secs(300),
            ],
            acceptance_timeout: Duration::from_secs(60),
            stuck_sweep_interval: Duration::from_secs(30),
            stuck_after: Duration::from_secs(600),
            stuck_after_working: Duration::from_secs(1200),
            overdue_sweep_interval: Duration::from_secs(30),
            ttl_sweep_interval: Duration::from_secs(60),
            task_ttl: Duration::from_millis(600_000),
            llm_probe_interval: llm_health::PROBE_INTERVAL,
            llm_probe_timeout: llm_health::PROBE_TIMEOUT,
            default_repo: None,
            risk_auto_merge_tier1: false,
        }
    }
}

/// Something that happened on the hub, for tests and the demo to observe.
///
/// In every variant `conn` numbers the connection (1, 2, ... in order of arrival) and `at` is
/// the `tokio::time::Instant` of the event (virtual time under a paused clock).
#[derive(Clone, Debug)]
pub enum HubEvent {
    /// A WebSocket handshake completed.
    Connected {
        /// Connection number.
        conn: u64,
        /// When it happened.
        at: Instant,
    },
    /// A text frame arrived.
    Received {
        /// Connection number.
        conn: u64,
        /// When it happened.
        at: Instant,
        /// The frame's text, exactly as received.
        text: String,
    },
    /// A text frame was sent.
    Sent {
        /// Connection number.
        conn: u64,
        /// When it happened.
        at: Instant,
        /// The frame's text, exactly as sent.
        text: String,
    },
    /// A socket identified successfully.
    Identified {
        /// Connection number.
        conn: u64,
        /// When it happened.
        at: Instant,
        /// The agent it identified as.
        agent_id: String,
    },
    /// The client answered a WebSocket ping with a control pong.
    WsPong {
        /// Connection number.
        conn: u64,
        /// When it happened.
        at: Instant,
        /// The pong's payload.
        payload: Vec<u8>,
    },
    /// The connection ended.
    Closed {
        /// Connection number.
        conn: u64,
        /// When it happened.
        at: Instant,
        /// The close code; None when the stream ended without one (or the hub dropped it).
        code: Option<u16>,
        /// The close reason ("" when none).
        reason: String,
        /// True when the hub closed or dropped the connection, false when the client did.
        by_hub: bool,
    },
}

/// A line of the hub's own log (the real hub's `hub.log`), e.g. the warning
/// `fsm_unexpected_event` when an agent sends `task_failed` before `task_accepted`.
#[derive(Clone, Debug, PartialEq)]
pub struct HubLogLine {
    /// When (virtual time under a paused clock).
    pub at: Instant,
    /// `warning` (the only level modelled).
    pub level: &'static str,
    /// The real hub's event name: `fsm_unexpected_event`, `fsm_acceptance_timeout`,
    /// `fsm_reclaim_failed`, `fsm_invalid_transition`, `scheduler_reclaim_stuck`,
    /// `task_overdue_reclaim`, `scheduler_task_ttl_expired`.
    pub event: String,
    /// The agent concerned ("" when none, as for `scheduler_task_ttl_expired`).
    pub agent_id: String,
    /// The task concerned, if any.
    pub task_id: Option<String>,
    /// What the real hub logs with it, e.g. `event task_failed, current_state assigned`.
    pub detail: String,
}

/// The agent has no registered socket to push to.
#[derive(Debug)]
pub struct NotConnected;

impl std::fmt::Display for NotConnected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("agent_not_connected")
    }
}

impl std::error::Error for NotConnected {}

/// What the connections, the reaper and the handle share.
pub(crate) struct Shared {
    opts: HubOptions,
    /// The address the hub listens on (the port of `hub_ws_url` when a Host header has none).
    addr: SocketAddr,
    state: Mutex<State>,
    events: broadcast::Sender<HubEvent>,
    conn_gone: Notify,
    /// The wall clock (epoch ms) and tokio's clock when the hub started ([`Shared::clock_ms`]).
    started: (u64, Instant),
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Epoch ms on tokio's clock: the wall clock at start plus tokio time since then. The
    /// overdue sweep compares `complete_by` with it, so a paused test clock drives it too.
    fn clock_ms(&self) -> u64 {
        let since = Instant::now().saturating_duration_since(self.started.1);
        self.started
            .0
            .saturating_add(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }

    fn emit(&self, event: HubEvent) {
        self.lock().history.push(event.clone());
        let _ = self.events.send(event);
    }
}

/// The listener and the reaper of the current run.
#[derive(Default)]
struct Running {
    tasks: Vec<JoinHandle<()>>,
}

/// A handle to a running embedded hub; clones share the same hub.
///
/// Dropping the handles does not stop it (its tasks live until the runtime ends): call
/// [`EmbeddedHub::stop`]. Every method that spawns must run inside a tokio runtime.
#[derive(Clone)]
pub struct EmbeddedHub {
    shared: Arc<Shared>,
    addr: SocketAddr,
    running: Arc<Mutex<Running>>,
}

/// `from + after`, or a year from `from` when that would overflow (absurd options must not panic).
pub(crate) fn later(from: Instant, after: Duration) -> Instant {
    from.checked_add(after)
        .or_else(|| from.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(from)
}

/// Compact JSON text with object keys in alphabetical order, as the real hub sends them
/// (explicit, so it holds even if serde_json's `preserve_order` feature gets enabled).
pub(crate) fn wire_text(frame: &serde_json::Value) -> String {
    sorted(frame).to_string()
}

fn sorted(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// A fresh token: 64 lower-case hex characters.
pub(crate) fn new_token() -> String {
    (0..64).map(|_| fastrand::digit(16)).collect()
}

/// Milliseconds since the Unix epoch, for `timestamp` and `connected_at`.
pub(crate) fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl EmbeddedHub {
    /// Starts a hub on 127.0.0.1 with a free port.
    pub async fn start(opts: HubOptions) -> std::io::Result<EmbeddedHub> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), opts).await
    }

    /// Starts a hub listening on `addr`.
    pub async fn start_on(addr: SocketAddr, opts: HubOptions) -> std::io::Result<EmbeddedHub> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = State {
            default_repo: opts.default_repo.clone(),
            auto_merge_tier1: opts.risk_auto_merge_tier1,
            ..State::default()
        };
        let shared = Arc::new(Shared {
            opts,
            addr,
            state: Mutex::new(state),
            events: broadcast::channel(4096).0,
            conn_gone: Notify::new(),
            started: (epoch_ms(), Instant::now()),
        });
        let hub = EmbeddedHub {
            shared,
            addr,
            running: Arc::default(),
        };
        hub.launch(listener);
        Ok(hub)
    }

    fn launch(&self, listener: TcpListener) {
        let accept = tokio::spawn(accept_loop(self.clone(), listener));
        let reaper = tokio::spawn(reaper(self.shared.clone()));
        let sweep = tokio::spawn(scheduler::stuck_sweep(self.shared.clone()));
        let health = tokio::spawn(llm_health::health_loop(self.shared.clone()));
        let overdue = tokio::spawn(sweeps::overdue_sweep(self.shared.clone()));
        let ttl = tokio::spawn(sweeps::ttl_sweep(self.shared.clone()));
        self.running.lock().unwrap_or_else(|p| p.into_inner()).tasks =
            vec![accept, reaper, sweep, health, overdue, ttl];
    }

    /// The address the hub listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The WebSocket URL agents connect to, `ws://127.0.0.1:PORT/ws`.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Creates a random 64-hex-char token bound to `agent_id` (like `POST /admin/tokens`).
    pub fn add_token(&self, agent_id: &str) -> String {
        let token = new_token();
        self.insert_token(agent_id, &token);
        token
    }

    /// Revokes every token of `agent_id` (like `DELETE /admin/tokens/:agent_id`); returns how
    /// many there were. Sockets already identified stay connected.
    pub fn revoke_tokens(&self, agent_id: &str) -> usize {
        self.shared.lock().revoke(agent_id)
    }

    /// Sets the hub config's `default_repo` (like `PUT /api/config/default-repo`); None unsets it.
    pub fn set_default_repo(&self, url: Option<&str>) {
        self.shared.lock().default_repo = url.map(str::to_string);
    }

    /// Sets the hub config flag `risk_auto_merge_tier1` (tier 1 classifications become
    /// `auto_merge_eligible`).
    pub fn set_auto_merge_tier1(&self, on: bool) {
        self.shared.lock().auto_merge_tier1 = on;
    }

    /// The HTTP API's base URL, `http://127.0.0.1:PORT` (the same port as the WebSocket).
    pub fn api_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Binds a given token to `agent_id`.
    pub fn insert_token(&self, agent_id: &str, token: &str) {
        self.shared
            .lock()
            .tokens
            .insert(token.to_string(), agent_id.to_string());
    }

    /// Closes every connection with 1000 "" and stops listening (the port then refuses).
    pub async fn stop(&self) {
        let tasks = std::mem::take(&mut self.running.lock().unwrap_or_else(|p| p.into_inner()).tasks);
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
        let mut told = HashSet::new();
        let wait_all = async {
            loop {
                let gone = self.shared.conn_gone.notified();
                {
                    let st = self.shared.lock();
                    if st.conns.is_empty() {
                        break;
                    }
                    // Connections served meanwhile (serve_stream) are told as well.
                    for (conn, entry) in &st.conns {
                        if told.insert(*conn) {
                            let _ = entry.tx.send(ConnCmd::Close(1000, String::new()));
                        }
                    }
                }
                gone.await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), wait_all).await;
        self.shared.lock().reset_runtime();
    }

    /// Listens again on the same port; tokens persist, cooldowns and presence do not.
    pub async fn restart(&self) -> std::io::Result<()> {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await?;
        self.launch(listener);
        Ok(())
    }

    /// Serves one connection on any stream (e.g. `tokio::io::duplex`): a WebSocket handshake,
    /// then the hub logic; or one HTTP API request (a request without `Upgrade: websocket`).
    /// Either way the connection takes the next connection number.
    pub fn serve_stream<S>(&self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_from(stream, None);
    }

    fn serve_from<S>(&self, stream: S, peer: Option<IpAddr>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = {
            let mut st = self.shared.lock();
            st.next_conn += 1;
            let conn = st.next_conn;
            st.conns.insert(
                conn,
                ConnEntry {
                    tx,
                    agent_id: None,
                    dashboard: false,
                },
            );
            conn
        };
        tokio::spawn(conn::run(self.shared.clone(), conn, stream, rx, peer));
    }

    /// Subscribes to events from now on.
    pub fn events(&self) -> broadcast::Receiver<HubEvent> {
        self.shared.events.subscribe()
    }

    /// Every event so far.
    pub fn history(&self) -> Vec<HubEvent> {
        self.shared.lock().history.clone()
    }

    /// The hub's own log lines so far (its warnings about agents and tasks), oldest first.
    pub fn hub_log(&self) -> Vec<HubLogLine> {
        self.shared.lock().log.clone()
    }

    /// Sends a frame to the socket registered for `agent_id` (the first one, as the real hub routes).
    pub async fn push(&self, agent_id: &str, frame: serde_json::Value) -> Result<(), NotConnected> {
        self.order(agent_id, ConnCmd::Push(wire_text(&frame)))
    }

    /// Test knob: `false` makes the hub swallow JSON pings (no pong), like a dead hub.
    pub fn set_answer_pings(&self, on: bool) {
        self.shared.lock().swallow_pings = !on;
    }

    /// Test knob: `false` turns the per-agent rate limits off (the real hub always has them),
    /// for tests that send far more frames a minute than a real agent does.
    pub fn set_rate_limits(&self, on: bool) {
        self.shared.lock().unlimited = !on;
    }

    /// Sends a WebSocket-level ping frame to the socket registered for `agent_id`.
    pub async fn ws_ping(&self, agent_id: &str, payload: Vec<u8>) -> Result<(), NotConnected> {
        self.order(agent_id, ConnCmd::Ping(payload))
    }

    /// The agent_ids in presence, sorted.
    pub fn connected_agents(&self) -> Vec<String> {
        self.shared.lock().presence.keys().cloned().collect()
    }

    fn order(&self, agent_id: &str, cmd: ConnCmd) -> Result<(), NotConnected> {
        let st = self.shared.lock();
        let conn = st.registry.get(agent_id).ok_or(NotConnected)?;
        let entry = st.conns.get(conn).ok_or(NotConnected)?;
        entry.tx.send(cmd).map_err(|_| NotConnected)
    }
}

async fn accept_loop(hub: EmbeddedHub, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                hub.serve_from(tcp, Some(peer.ip()));
            }
            // E.g. out of file descriptors: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Every `reaper_interval`, drops (no close frame) agents whose last JSON ping is too old.
async fn reaper(shared: Arc<Shared>) {
    let period = shared.opts.reaper_interval.max(Duration::from_millis(1));
    let mut next = later(Instant::now(), period);
    loop {
        tokio::time::sleep_until(next).await;
        next = later(next, period);
        let now = Instant::now();
        let mut st = shared.lock();
        let stale: Vec<(String, u64)> = st
            .presence
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last_seen) > shared.opts.reaper_ttl)
            .map(|(id, p)| (id.clone(), p.conn))
            .collect();
        for (agent_id, conn) in stale {
            match st.conns.get(&conn) {
                Some(entry) => {
                    let _ = entry.tx.send(ConnCmd::Drop);
                }
                None => {
                    st.presence.remove(&agent_id);
                }
            }
        }
    }
}
