//! Hub-wide tables: tokens, the agent registry and presence, cooldown strikes, rate buckets
//! and the open connections. Guarded by one mutex that is never held across an `.await`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use super::llm::Registry;
use super::rate::{Bucket, Tier, Verdict};
use super::tasks::Tasks;
use super::{HubEvent, HubLogLine};

/// How long a strike is remembered for escalating the next cooldown (the hub sweeps after 10 min).
const STRIKE_MEMORY: Duration = Duration::from_secs(600);

/// An order for a connection task, sent from the handle, the reaper or another connection.
#[derive(Debug)]
pub enum ConnCmd {
    /// Send this text frame.
    Push(String),
    /// Close with this code and reason.
    Close(u16, String),
    /// Drop the stream without a close frame (the reaper's kill).
    Drop,
    /// Send a WebSocket-level ping with this payload.
    Ping(Vec<u8>),
}

/// One open connection as seen by the rest of the hub.
#[derive(Debug)]
pub struct ConnEntry {
    /// Where to send orders for this connection.
    pub tx: UnboundedSender<ConnCmd>,
    /// The agent this socket identified as (it then receives the presence broadcasts).
    pub agent_id: Option<String>,
    /// True for a `/ws/dashboard` socket: it receives the `execution_event` broadcasts only.
    pub dashboard: bool,
}

/// The presence record of an identified agent.
#[derive(Debug, Clone)]
pub struct PresenceEntry {
    /// The connection that registered last for this agent_id.
    pub conn: u64,
    /// `name` from identify, else the agent_id.
    pub name: String,
    /// `status` from identify or a `status` message; "connected" by default.
    pub status: String,
    /// `capabilities` from identify.
    pub capabilities: Value,
    /// Epoch ms of the identify.
    pub connected_at: u64,
    /// Last JSON ping or identify (the reaper's clock).
    pub last_seen: Instant,
}

impl PresenceEntry {
    /// The `agent` object of `agent_joined`, `status_changed` and `agents`.
    pub fn to_json(&self, agent_id: &str) -> Value {
        json!({"agent_id": agent_id, "name": self.name, "status": self.status,
            "capabilities": self.capabilities, "connected_at": self.connected_at})
    }
}

/// Validation-violation strikes recorded for one agent_id.
#[derive(Debug, Clone, Copy)]
pub struct Strike {
    /// How many 1008 disconnects were recorded.
    pub count: usize,
    /// When the last one happened.
    pub at: Instant,
}

/// Everything the hub shares between connections.
#[derive(Debug, Default)]
pub struct State {
    /// token -> agent_id; survives restarts.
    pub tokens: HashMap<String, String>,
    /// agent_id -> strikes.
    pub strikes: HashMap<String, Strike>,
    /// agent_id -> connection that receives pushes (unique: the first registration wins).
    pub registry: HashMap<String, u64>,
    /// agent_id -> presence, sorted like `list_agents`.
    pub presence: BTreeMap<String, PresenceEntry>,
    /// Open connections.
    pub conns: HashMap<u64, ConnEntry>,
    /// Rate buckets per (agent_id, tier).
    pub buckets: HashMap<(String, Tier), Bucket>,
    /// The HTTP API's rate buckets per (agent_id or `ip:ADDR`, tier).
    pub http_buckets: HashMap<(String, Tier), Bucket>,
    /// `default_repo` of the hub's config (`PUT /api/config/default-repo`); survives restarts.
    pub default_repo: Option<String>,
    /// The hub config flag `risk_auto_merge_tier1`: tier 1 classifications are auto-merge eligible.
    pub auto_merge_tier1: bool,
    /// Every event so far.
    pub history: Vec<HubEvent>,
    /// The hub's own log lines so far (hub.log's warnings about agents and tasks).
    pub log: Vec<HubLogLine>,
    /// Last connection id handed out.
    pub next_conn: u64,
    /// False makes the hub swallow JSON pings.
    pub swallow_pings: bool,
    /// Test knob: no rate limiting (every frame allowed, no warnings).
    pub unlimited: bool,
    /// The task queue and the agents' FSMs (tasks survive a restart).
    pub tasks: Tasks,
    /// The LLM registry (survives a restart, like the real hub's DETS table).
    pub llm: Registry,
}

impl State {
    /// Seconds of cooldown left for `agent_id` (rounded up), if one is active.
    pub fn cooldown_left(&self, agent_id: &str, now: Instant, cooldowns: &[Duration]) -> Option<u64> {
        let strike = self.strikes.get(agent_id)?;
        let idx = strike
            .count
            .saturating_sub(1)
            .min(cooldowns.len().checked_sub(1)?);
        let until = super::later(strike.at, cooldowns[idx]);
        let left = until.checked_duration_since(now).filter(|d| !d.is_zero())?;
        Some(left.as_millis().div_ceil(1000) as u64)
    }

    /// Records a 1008 "too many validation errors" disconnect for `agent_id`.
    pub fn add_strike(&mut self, agent_id: &str, now: Instant) {
        let entry = self
            .strikes
            .entry(agent_id.to_string())
            .or_insert(Strike { count: 0, at: now });
        if now.saturating_duration_since(entry.at) > STRIKE_MEMORY {
            entry.count = 0;
        }
        entry.count += 1;
        entry.at = now;
    }

    /// Takes a token from the agent's bucket of `tier`.
    pub fn rate(&mut self, agent_id: &str, tier: Tier, now: Instant) -> Verdict {
        if self.unlimited {
            return Verdict::Allow;
        }
        self.buckets
            .entry((agent_id.to_string(), tier))
            .or_insert_with(|| Bucket::new(tier, now))
            .take(now)
    }

    /// Takes a token from the HTTP bucket of `key` (agent_id or `ip:ADDR`) in `tier`.
    pub fn rate_http(&mut self, key: &str, tier: Tier, now: Instant) -> Verdict {
        if self.unlimited {
            return Verdict::Allow;
        }
        self.http_buckets
            .entry((key.to_string(), tier))
            .or_insert_with(|| Bucket::new(tier, now))
            .take(now)
    }

    /// The agent a token belongs to.
    pub fn token_agent(&self, token: &str) -> Option<&str> {
        self.tokens.get(token).map(String::as_str)
    }

    /// Revokes every token of `agent_id`; returns how many there were.
    pub fn revoke(&mut self, agent_id: &str) -> usize {
        let before = self.tokens.len();
        self.tokens.retain(|_, owner| owner != agent_id);
        before - self.tokens.len()
    }

    /// Sends `frame` to every identified socket (except those identified as `skip`).
    pub fn broadcast(&self, frame: &Value, skip: Option<&str>) {
        let text = super::wire_text(frame);
        for entry in self.conns.values() {
            match &entry.agent_id {
                Some(id) if Some(id.as_str()) != skip => {
                    let _ = entry.tx.send(ConnCmd::Push(text.clone()));
                }
                _ => {}
            }
        }
    }

    /// Sends `frame` to every `/ws/dashboard` socket.
    pub fn to_dashboards(&self, frame: &Value) {
        let text = super::wire_text(frame);
        for entry in self.conns.values().filter(|e| e.dashboard) {
            let _ = entry.tx.send(ConnCmd::Push(text.clone()));
        }
    }

    /// Forgets a closed connection; if it was identified, unregisters the agent and tells the others.
    pub fn remove_conn(&mut self, conn: u64) {
        let Some(entry) = self.conns.remove(&conn) else {
            return;
        };
        let Some(agent_id) = entry.agent_id else {
            return;
        };
        if self.registry.get(&agent_id) == Some(&conn) {
            self.registry.remove(&agent_id);
        }
        // Like the real hub: Presence.unregister(agent_id) removes the entry whichever socket
        // registered it last, and always broadcasts agent_left (a duplicate sees itself leave).
        self.presence.remove(&agent_id);
        self.broadcast(&json!({"type": "agent_left", "agent_id": agent_id}), None);
    }

    /// Appends a warning to the hub's log.
    pub fn warn(&mut self, event: &str, agent_id: &str, task_id: Option<&str>, detail: String) {
        self.log.push(HubLogLine {
            at: Instant::now(),
            level: "warning",
            event: event.to_string(),
            agent_id: agent_id.to_string(),
            task_id: task_id.map(str::to_string),
            detail,
        });
    }

    /// Forgets what a hub restart forgets: presence, registry, strikes and rate buckets.
    pub fn reset_runtime(&mut self) {
        self.strikes.clear();
        self.registry.clear();
        self.presence.clear();
        self.buckets.clear();
        self.http_buckets.clear();
        self.tasks.fsms.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cooldowns_escalate_and_count_down() {
        let cds = [
            Duration::from_secs(30),
            Duration::from_secs(60),
            Duration::from_secs(300),
        ];
        let mut s = State::default();
        let t0 = Instant::now();
        assert_eq!(s.cooldown_left("a", t0, &cds), None);
        s.add_strike("a", t0);
        assert_eq!(
            s.cooldown_left("a", t0 + Duration::from_millis(6), &cds),
            Some(30)
        );
        assert_eq!(s.cooldown_left("a", t0 + Duration::from_secs(10), &cds), Some(20));
        assert_eq!(s.cooldown_left("a", t0 + Duration::from_secs(30), &cds), None);
        s.add_strike("a", t0 + Duration::from_secs(40));
        assert_eq!(s.cooldown_left("a", t0 + Duration::from_secs(40), &cds), Some(60));
        s.add_strike("a", t0 + Duration::from_secs(50));
        s.add_strike("a", t0 + Duration::from_secs(50));
        assert_eq!(
            s.cooldown_left("a", t0 + Duration::from_secs(50), &cds),
            Some(300)
        );
    }
}
