//! The logic of one connection, free of I/O: each text frame in, a list of actions out.
//! Covers decoding, validation and violations, identify, the identification check, rate
//! limits, and the replies of every message type (the task-side ones through [`super::tasks`]).

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::rate::{Tier, Verdict};
use super::scheduler;
use super::state::PresenceEntry;
use super::tasks::{Completion, Refusal};
use super::{epoch_ms, llm, schema, HubEvent, Shared};

/// What the connection task must do after a frame.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Send this JSON frame.
    Send(Value),
    /// Close with this code and reason, then end the connection.
    Close(u16, String),
}

/// Per-connection state: identity and the violation window.
pub struct Session {
    shared: Arc<Shared>,
    conn: u64,
    agent_id: Option<String>,
    violations: VecDeque<Instant>,
}

fn error(reason: &str) -> Value {
    json!({"type": "error", "error": reason})
}

fn str_field<'a>(msg: &'a Map<String, Value>, key: &str) -> &'a str {
    msg.get(key).and_then(Value::as_str).unwrap_or_default()
}

impl Session {
    /// A fresh, unidentified session for connection `conn`.
    pub fn new(shared: Arc<Shared>, conn: u64) -> Session {
        Session {
            shared,
            conn,
            agent_id: None,
            violations: VecDeque::new(),
        }
    }

    /// Handles one text frame.
    pub fn on_text(&mut self, text: &str) -> Vec<Action> {
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => return vec![Action::Send(error("invalid_json"))],
        };
        // The real hub's connection process crashes on a non-object: close 1011, no frame.
        let Value::Object(msg) = value else {
            return vec![Action::Close(1011, String::new())];
        };
        let msg_type = match schema::validate(&msg) {
            Ok(t) => t,
            Err(frame) => return self.violation(frame),
        };
        let Some(agent_id) = self.agent_id.clone() else {
            if msg_type == "identify" {
                return self.identify(&msg);
            }
            return vec![Action::Send(error("not_identified"))];
        };
        let tier = Tier::of(msg_type);
        let mut out = Vec::new();
        match self.shared.lock().rate(&agent_id, tier, Instant::now()) {
            Verdict::Allow => {}
            Verdict::Warn { remaining } => out.push(Action::Send(json!({"type": "rate_limit_warning",
                "tier": tier.name(), "remaining": remaining, "capacity": tier.capacity()}))),
            Verdict::Deny { retry_after_ms } => {
                return vec![Action::Send(json!({"type": "rate_limited", "tier": tier.name(),
                    "retry_after_ms": retry_after_ms}))];
            }
        }
        if msg_type == "identify" {
            out.extend(self.identify(&msg));
        } else {
            out.extend(self.dispatch(&agent_id, msg_type, &msg));
        }
        out
    }

    /// Counts a validation failure; the limit-th one closes the socket (and strikes the agent).
    fn violation(&mut self, frame: Value) -> Vec<Action> {
        let now = Instant::now();
        let opts = &self.shared.opts;
        self.violations.push_back(now);
        while let Some(first) = self.violations.front() {
            if now.saturating_duration_since(*first) >= opts.violation_window {
                self.violations.pop_front();
            } else {
                break;
            }
        }
        if self.violations.len() < opts.violation_limit.max(1) as usize {
            return vec![Action::Send(frame)];
        }
        if let Some(agent_id) = &self.agent_id {
            self.shared.lock().add_strike(agent_id, now);
        }
        vec![Action::Close(1008, "too many validation errors".into())]
    }

    /// Cooldown check, token check, then registration (§2.2 processing order).
    fn identify(&mut self, msg: &Map<String, Value>) -> Vec<Action> {
        let agent_id = str_field(msg, "agent_id").to_string();
        let token = str_field(msg, "token");
        let now = Instant::now();
        let mut st = self.shared.lock();
        if let Some(secs) = st.cooldown_left(&agent_id, now, &self.shared.opts.cooldowns) {
            return vec![Action::Close(1008, format!("cooldown active: retry in {secs}s"))];
        }
        match st.tokens.get(token) {
            None => return vec![Action::Send(error("invalid_token"))],
            Some(owner) if *owner != agent_id => {
                return vec![Action::Send(error("token_agent_mismatch"))];
            }
            Some(_) => {}
        }
        let entry = PresenceEntry {
            conn: self.conn,
            name: msg
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or(&agent_id)
                .to_string(),
            status: msg
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("connected")
                .to_string(),
            capabilities: msg
                .get("capabilities")
                .filter(|c| c.is_array())
                .cloned()
                .unwrap_or(json!([])),
            connected_at: epoch_ms(),
            last_seen: now,
        };
        // Unique registry: a duplicate agent_id leaves pushes going to the first socket.
        st.registry.entry(agent_id.clone()).or_insert(self.conn);
        let joined = json!({"type": "agent_joined", "agent": entry.to_json(&agent_id)});
        st.presence.insert(agent_id.clone(), entry);
        if let Some(c) = st.conns.get_mut(&self.conn) {
            c.agent_id = Some(agent_id.clone());
        }
        st.broadcast(&joined, Some(&agent_id));
        let caps: Vec<String> = msg
            .get("capabilities")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        let name = msg
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or(&agent_id)
            .to_string();
        scheduler::start_fsm(&self.shared, &mut st, &agent_id, self.conn, caps, name);
        // An identify's ollama_url registers (resets) the endpoint `<agent_id>-local` (§11.3).
        if let Some((host, port)) = msg
            .get("ollama_url")
            .and_then(Value::as_str)
            .and_then(llm::parse_ollama_url)
        {
            st.llm.upsert(&host, port, &format!("{agent_id}-local"), "auto");
        }
        // Queued behind `identified`: the scheduler's pushes go through the connection's channel.
        scheduler::schedule(&self.shared, &mut st);
        drop(st);
        self.agent_id = Some(agent_id.clone());
        self.shared.emit(HubEvent::Identified {
            conn: self.conn,
            at: now,
            agent_id: agent_id.clone(),
        });
        vec![Action::Send(json!({"type": "identified", "agent_id": agent_id}))]
    }

    /// Replies of an identified socket.
    fn dispatch(&mut self, agent_id: &str, msg_type: &str, msg: &Map<String, Value>) -> Vec<Action> {
        let task_id = str_field(msg, "task_id");
        let reply = match msg_type {
            "ping" => return self.ping(agent_id),
            "status" => return self.status(agent_id, str_field(msg, "status")),
            "list_agents" => {
                let st = self.shared.lock();
                let agents: Vec<Value> = st.presence.iter().map(|(id, p)| p.to_json(id)).collect();
                json!({"type": "agents", "agents": agents})
            }
            "task_accepted" | "task_complete" | "task_failed" | "task_recovering" | "state_report"
            | "task_progress" | "wake_result" => {
                return tasks_reply(&self.shared, agent_id, msg_type, task_id, msg);
            }
            "ollama_report" => {
                // Registers like identify's ollama_url (§11.3): the URL, else host and port.
                let url = msg.get("ollama_url").and_then(Value::as_str);
                let endpoint = url.and_then(llm::parse_ollama_url).or_else(|| {
                    let host = msg
                        .get("host")
                        .and_then(Value::as_str)
                        .filter(|h| !h.is_empty())?;
                    let port = msg.get("port").and_then(Value::as_u64).unwrap_or(11434);
                    Some((host.to_string(), u16::try_from(port).ok()?))
                });
                if let Some((host, port)) = endpoint {
                    let name = format!("{agent_id}-local");
                    self.shared.lock().llm.upsert(&host, port, &name, "auto");
                }
                json!({"type": "ollama_report_ack", "status": "registered"})
            }
            // resource_report never gets a reply. Chat and
            // channels (message, channel_*, list_channels) are not modelled: no reply.
            _ => return Vec::new(),
        };
        vec![Action::Send(reply)]
    }

    fn ping(&mut self, agent_id: &str) -> Vec<Action> {
        let mut st = self.shared.lock();
        if let Some(p) = st.presence.get_mut(agent_id) {
            p.last_seen = Instant::now();
        }
        if st.swallow_pings {
            return Vec::new();
        }
        vec![Action::Send(json!({"type": "pong", "timestamp": epoch_ms()}))]
    }

    fn status(&mut self, agent_id: &str, status: &str) -> Vec<Action> {
        let mut st = self.shared.lock();
        if let Some(p) = st.presence.get_mut(agent_id) {
            p.status = status.to_string();
            let changed = json!({"type": "status_changed", "agent": p.to_json(agent_id)});
            // Queued behind status_updated on our own socket, as on the real hub.
            st.broadcast(&changed, None);
        }
        vec![Action::Send(json!({"type": "status_updated"}))]
    }
}

/// The task-side message types of an identified agent (already validated).
fn tasks_reply(
    shared: &Arc<Shared>,
    agent_id: &str,
    msg_type: &str,
    task_id: &str,
    msg: &Map<String, Value>,
) -> Vec<Action> {
    let now = Instant::now();
    let mut st = shared.lock();
    let generation = msg.get("generation").and_then(Value::as_i64).unwrap_or(0);
    // A negative generation can match nothing: it fences like a stale one.
    let fence = u64::try_from(generation).unwrap_or(u64::MAX);
    let ack = |status: &str| json!({"type": "task_ack", "status": status, "task_id": task_id});
    let reply = match msg_type {
        "task_accepted" => {
            st.tasks.touch(task_id, now);
            if let Some(fsm) = st.tasks.fsms.get_mut(agent_id) {
                if fsm.state == "assigned" && fsm.current.as_deref() == Some(task_id) {
                    fsm.set_state("working");
                }
            }
            ack("accepted")
        }
        "task_complete" => {
            let result = msg.get("result").filter(|r| !r.is_null()).cloned();
            let tokens = msg.get("tokens_used").and_then(Value::as_i64).or_else(|| {
                result
                    .as_ref()
                    .and_then(|r| r.get("tokens_used"))
                    .and_then(Value::as_i64)
            });
            // The schema has checked the types: an object, a list of objects, or null.
            let done = Completion {
                result,
                tokens_used: tokens,
                verification_report: msg.get("verification_report").filter(|r| r.is_object()).cloned(),
                verification_history: msg
                    .get("verification_history")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            };
            match st.tasks.complete(agent_id, task_id, fence, done, now) {
                Ok(()) => {
                    scheduler::schedule(shared, &mut st);
                    ack("complete")
                }
                Err(r) => refused("task_complete_failed", r),
            }
        }
        "task_failed" => {
            let text = |k: &str| msg.get(k).and_then(Value::as_str);
            let why = text("error").or_else(|| text("reason")).unwrap_or("unknown");
            let fsm_state = st.tasks.fsms.get(agent_id).map(|f| f.state);
            match st.tasks.fail(agent_id, task_id, fence, why, now) {
                Ok(status) => {
                    if fsm_state == Some("assigned") {
                        // Before task_accepted the AgentFSM ignores it: the agent stays assigned
                        // until the acceptance timeout (the queue has counted the retry).
                        st.warn(
                            "fsm_unexpected_event",
                            agent_id,
                            Some(task_id),
                            "event task_failed, current_state assigned".into(),
                        );
                    }
                    scheduler::schedule(shared, &mut st);
                    ack(status)
                }
                Err(r) => refused("task_fail_failed", r),
            }
        }
        "task_recovering" => match st.tasks.recover(task_id) {
            Some(generation) => {
                json!({"type": "task_continue", "task_id": task_id, "generation": generation})
            }
            None => json!({"type": "task_reassign", "task_id": task_id}),
        },
        "state_report" => {
            let action = if st.tasks.report(agent_id, task_id, generation, now) {
                "continue"
            } else {
                "abort"
            };
            json!({"type": "state_report_ack", "action": action, "task_id": task_id})
        }
        "task_progress" => {
            // No reply, ever; touches updated_at while the task is assigned (to anyone).
            if st
                .tasks
                .map
                .get(task_id)
                .is_some_and(|t| t.rec.status == "assigned")
            {
                st.tasks.touch(task_id, now);
            }
            // An execution_event goes to every dashboard, tool fields dropped, whoever holds the task.
            if let Some(ev) = msg.get("execution_event").and_then(Value::as_object) {
                let field = |k: &str| ev.get(k).cloned().unwrap_or(Value::Null);
                let frame = json!({"type": "execution_event", "task_id": task_id,
                    "event_type": field("event_type"), "text": field("text"),
                    "tokens_so_far": field("tokens_so_far"), "model": field("model"),
                    "timestamp": field("timestamp")});
                st.to_dashboards(&frame);
            }
            return Vec::new();
        }
        "wake_result" => {
            if str_field(msg, "status") == "success" {
                st.tasks.touch(task_id, now);
            }
            return Vec::new();
        }
        _ => return Vec::new(),
    };
    vec![Action::Send(reply)]
}

fn refused(prefix: &str, why: Refusal) -> Value {
    error(&format!("{prefix}: {}", why.text()))
}
