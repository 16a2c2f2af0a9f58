//! Every hub <-> sidecar frame as a typed value.
//!
//! Outbound frames ([`Outbound`]) serialize to exactly what the hub's schemas accept, each with
//! `protocol_version: 1`. Inbound frames ([`Inbound`]) are parsed from raw text without ever
//! failing hard: anything the sidecar does not understand becomes [`Inbound::Other`] or a
//! [`FrameError`] that the caller logs before carrying on.

use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;

/// The protocol version the Node sidecar stamps on every frame; the hub passes it through.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest inbound text frame the sidecar accepts (the hub's own frames are a few KiB).
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// The `identify` frame: the first frame on every connection.
#[derive(Clone, PartialEq, Serialize)]
pub struct Identify {
    /// The agent's id, bound to the token on the hub.
    pub agent_id: String,
    /// The hub token. Never printed: see the `Debug` impl.
    pub token: String,
    /// Display name (defaults to agent_id).
    pub name: String,
    /// Always "idle" on identify, as the Node sidecar sends.
    pub status: &'static str,
    /// Capability names the scheduler matches tasks against.
    pub capabilities: Vec<String>,
    /// Always "sidecar".
    pub client_type: &'static str,
    /// The operator's Ollama (config `ollama_url`), which the hub registers; absent when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ollama_url: Option<String>,
}

impl fmt::Debug for Identify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identify")
            .field("agent_id", &self.agent_id)
            .field("token", &"<redacted>")
            .field("name", &self.name)
            .field("capabilities", &self.capabilities)
            .finish()
    }
}

/// A frame the sidecar sends to the hub.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outbound {
    /// Authenticate this connection as an agent.
    Identify(Identify),
    /// Application-level keepalive; the hub answers `pong` and refreshes presence.
    Ping {},
    /// The task is persisted and ours; the hub answers `task_ack accepted`.
    TaskAccepted {
        /// The task.
        task_id: String,
    },
    /// Progress, or a keepalive that holds off the hub's stuck sweep. No reply.
    TaskProgress {
        /// The task.
        task_id: String,
        /// Percent or step count the agent reported.
        #[serde(skip_serializing_if = "Option::is_none")]
        progress: Option<i64>,
        /// `{event_type, text}` when the agent gave a message.
        #[serde(skip_serializing_if = "Option::is_none")]
        execution_event: Option<Value>,
    },
    /// The agent succeeded; fenced by generation on the hub.
    TaskComplete {
        /// The task.
        task_id: String,
        /// The generation the hub last gave this task.
        generation: i64,
        /// The agent's result object.
        result: Map<String, Value>,
        /// Tokens the agent reported, when an integer.
        #[serde(skip_serializing_if = "Option::is_none")]
        tokens_used: Option<i64>,
        /// The last verification report (protocol §11.8), an object; omitted when none.
        #[serde(skip_serializing_if = "Option::is_none")]
        verification_report: Option<Value>,
        /// Every verification report, one per run, each an object; omitted when none.
        #[serde(skip_serializing_if = "Option::is_none")]
        verification_history: Option<Vec<Value>>,
    },
    /// The task failed (or was refused); fenced by generation on the hub.
    TaskFailed {
        /// The task.
        task_id: String,
        /// Why, at most [`MAX_REASON_CHARS`] characters.
        reason: String,
        /// The generation of the assignment this answers.
        generation: i64,
    },
    /// After a restart: "I held this task; is it still mine?"
    TaskRecovering {
        /// The task.
        task_id: String,
        /// Its description, as the Node sidecar sends.
        description: String,
        /// Its metadata object.
        metadata: Value,
        /// The status it had in queue.json.
        last_status: String,
    },
    /// After a reconnect: "I am working on this task at this generation."
    StateReport {
        /// The task.
        task_id: String,
        /// The task's status in queue.json.
        status: String,
        /// The generation we hold.
        generation: i64,
        /// When the hub assigned it (epoch ms).
        assigned_at: i64,
    },
    /// The outcome of one wake attempt. No reply.
    WakeResult {
        /// The task.
        task_id: String,
        /// success, failed or timeout.
        status: &'static str,
        /// Which attempt (1-based).
        #[serde(skip_serializing_if = "Option::is_none")]
        attempt: Option<u32>,
        /// What went wrong, at most [`MAX_REASON_CHARS`] characters.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// A short code (`confirmation_timeout`).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Host resources, every 30 s while identified. No reply. Every field is sent, null when
    /// unknown, as the Node sidecar does.
    ResourceReport {
        /// The agent reporting.
        agent_id: String,
        /// 1-minute load average / CPU count, in percent, capped at 100, one decimal.
        cpu_percent: Option<f64>,
        /// RAM in use (total - available), in bytes.
        ram_used_bytes: Option<u64>,
        /// RAM installed, in bytes.
        ram_total_bytes: Option<u64>,
        /// VRAM in use: Node asks Ollama; always `None` (null) here.
        vram_used_bytes: Option<u64>,
        /// VRAM installed: always `None` (null), as Node.
        vram_total_bytes: Option<u64>,
        /// When the sample was taken, epoch milliseconds.
        timestamp: i64,
    },
}

/// The hub's limit on `reason` and `error` strings, in characters.
pub const MAX_REASON_CHARS: usize = 2000;

/// Cut `s` to at most `max` characters (the hub counts characters, not bytes).
pub fn cut_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(flatten)]
    frame: &'a Outbound,
    protocol_version: u32,
}

impl Outbound {
    /// The frame as the JSON text that goes on the wire, with `protocol_version: 1`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&Envelope {
            frame: self,
            protocol_version: PROTOCOL_VERSION,
        })
        .expect("outbound frames always serialize")
    }

    /// The frame's `type`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Outbound::Identify(_) => "identify",
            Outbound::Ping {} => "ping",
            Outbound::TaskAccepted { .. } => "task_accepted",
            Outbound::TaskProgress { .. } => "task_progress",
            Outbound::TaskComplete { .. } => "task_complete",
            Outbound::TaskFailed { .. } => "task_failed",
            Outbound::TaskRecovering { .. } => "task_recovering",
            Outbound::StateReport { .. } => "state_report",
            Outbound::WakeResult { .. } => "wake_result",
            Outbound::ResourceReport { .. } => "resource_report",
        }
    }
}

/// An `{"type":"error"}` frame from the hub, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum HubError {
    /// No such token on the hub.
    InvalidToken,
    /// The token belongs to another agent_id.
    TokenAgentMismatch,
    /// A message other than identify arrived before identification.
    NotIdentified,
    /// The hub's schema rejected a frame we sent (a sidecar bug: logged loudly).
    ValidationFailed {
        /// The `message_type` the hub names.
        message_type: String,
        /// The hub's `errors` array, as sent.
        errors: Value,
    },
    /// The hub could not parse our text as JSON.
    InvalidJson,
    /// `task_complete_failed: <reason>` or `task_fail_failed: <reason>`: an outcome was refused.
    OutcomeRefused {
        /// The whole error string, as sent.
        error: String,
        /// `stale_generation`, `invalid_state`, `not_found`, or whatever followed the colon.
        reason: String,
    },
    /// Any other error string (`task_complete_failed: ...` and friends).
    Other(String),
}

impl HubError {
    /// The hub's `error` string.
    pub fn code(&self) -> &str {
        match self {
            HubError::InvalidToken => "invalid_token",
            HubError::TokenAgentMismatch => "token_agent_mismatch",
            HubError::NotIdentified => "not_identified",
            HubError::ValidationFailed { .. } => "validation_failed",
            HubError::InvalidJson => "invalid_json",
            HubError::OutcomeRefused { error, .. } => error,
            HubError::Other(s) => s,
        }
    }
}

/// A frame the hub sends to the sidecar.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// Identification succeeded.
    Identified {
        /// The agent id the hub registered.
        agent_id: String,
    },
    /// Answer to our `ping`.
    Pong,
    /// An error frame.
    Error(HubError),
    /// Another (or our own, see the ghost-connection bug) agent disconnected.
    AgentLeft {
        /// Who left.
        agent_id: String,
    },
    /// A bucket is below 20 %: informational, precedes the real reply.
    RateLimitWarning,
    /// The previous message was dropped by the hub's rate limiter.
    RateLimited {
        /// When a token is available again.
        retry_after_ms: u64,
        /// The bucket: light, normal or heavy.
        tier: String,
    },
    /// A frame about a task, for the relay.
    Task(TaskFrame),
    /// Any other well-formed frame: informational pushes, and types the link does not handle.
    Other {
        /// The frame's `type`.
        kind: String,
        /// The whole frame.
        frame: Map<String, Value>,
    },
}

/// A task frame from the hub.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskFrame {
    /// A task for this agent: the whole frame, checked field by field by the relay.
    Assign(Map<String, Value>),
    /// The hub recorded our `task_accepted`, `task_complete` or `task_failed`.
    Ack {
        /// The task.
        task_id: String,
        /// accepted, complete, retried or dead_letter.
        status: String,
    },
    /// Answer to `task_recovering`: keep it, at this generation.
    Continue {
        /// The task.
        task_id: String,
        /// The hub's current generation.
        generation: Option<i64>,
    },
    /// Answer to `task_recovering`: the hub took it back.
    Reassign {
        /// The task.
        task_id: String,
    },
    /// Answer to `state_report`: `continue` or `abort`.
    StateReportAck {
        /// The task.
        task_id: String,
        /// continue or abort.
        action: String,
    },
    /// The task was cancelled on the hub.
    Cancelled {
        /// The task.
        task_id: String,
    },
    /// The hub asks the sidecar to restart.
    RestartSidecar {
        /// Why, as the hub says.
        reason: String,
    },
}

/// Why an inbound text frame could not be understood.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameError {
    /// The frame is larger than [`MAX_FRAME_BYTES`].
    TooLarge(usize),
    /// Not JSON at all.
    NotJson(String),
    /// JSON, but not an object.
    NotAnObject,
    /// An object without a string `type`.
    NoType,
    /// A known type with a field of the wrong type.
    BadField {
        /// The frame's `type`.
        kind: String,
        /// The offending field.
        field: &'static str,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge(n) => {
                write!(f, "frame of {n} bytes is over the {MAX_FRAME_BYTES}-byte limit")
            }
            FrameError::NotJson(e) => write!(f, "not JSON: {e}"),
            FrameError::NotAnObject => write!(f, "JSON but not an object"),
            FrameError::NoType => write!(f, "object without a string \"type\""),
            FrameError::BadField { kind, field } => {
                write!(f, "\"{kind}\" frame with a missing or mistyped \"{field}\"")
            }
        }
    }
}

fn string_field(frame: &Map<String, Value>, kind: &str, field: &'static str) -> Result<String, FrameError> {
    match frame.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(FrameError::BadField {
            kind: kind.to_owned(),
            field,
        }),
    }
}

/// Parse one text frame from the hub.
pub fn parse_inbound(text: &str) -> Result<Inbound, FrameError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(text.len()));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| FrameError::NotJson(e.to_string()))?;
    let Value::Object(frame) = value else {
        return Err(FrameError::NotAnObject);
    };
    let kind = match frame.get("type") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(FrameError::NoType),
    };
    Ok(match kind.as_str() {
        "identified" => Inbound::Identified {
            agent_id: string_field(&frame, &kind, "agent_id")?,
        },
        "pong" => Inbound::Pong,
        "agent_left" => Inbound::AgentLeft {
            agent_id: string_field(&frame, &kind, "agent_id")?,
        },
        "rate_limit_warning" => Inbound::RateLimitWarning,
        "task_assign" => {
            string_field(&frame, &kind, "task_id")?;
            Inbound::Task(TaskFrame::Assign(frame))
        }
        "task_ack" => Inbound::Task(TaskFrame::Ack {
            task_id: string_field(&frame, &kind, "task_id")?,
            status: string_field(&frame, &kind, "status")?,
        }),
        "task_continue" => Inbound::Task(TaskFrame::Continue {
            task_id: string_field(&frame, &kind, "task_id")?,
            generation: frame.get("generation").and_then(Value::as_i64),
        }),
        "task_reassign" => Inbound::Task(TaskFrame::Reassign {
            task_id: string_field(&frame, &kind, "task_id")?,
        }),
        "state_report_ack" => Inbound::Task(TaskFrame::StateReportAck {
            task_id: string_field(&frame, &kind, "task_id")?,
            action: string_field(&frame, &kind, "action")?,
        }),
        "task_cancelled" => Inbound::Task(TaskFrame::Cancelled {
            task_id: string_field(&frame, &kind, "task_id")?,
        }),
        "restart_sidecar" => Inbound::Task(TaskFrame::RestartSidecar {
            reason: frame
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("hub_commanded")
                .to_owned(),
        }),
        "rate_limited" => Inbound::RateLimited {
            retry_after_ms: frame
                .get("retry_after_ms")
                .and_then(Value::as_u64)
                .unwrap_or(1000),
            tier: frame
                .get("tier")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_owned(),
        },
        "error" => Inbound::Error(match string_field(&frame, &kind, "error")?.as_str() {
            "invalid_token" => HubError::InvalidToken,
            "token_agent_mismatch" => HubError::TokenAgentMismatch,
            "not_identified" => HubError::NotIdentified,
            "invalid_json" => HubError::InvalidJson,
            "validation_failed" => HubError::ValidationFailed {
                message_type: match frame.get("message_type") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => "unknown".to_owned(),
                },
                errors: frame.get("errors").cloned().unwrap_or(Value::Null),
            },
            other => match other
                .strip_prefix("task_complete_failed:")
                .or_else(|| other.strip_prefix("task_fail_failed:"))
            {
                Some(reason) => HubError::OutcomeRefused {
                    error: other.to_owned(),
                    reason: reason.trim().to_owned(),
                },
                None => HubError::Other(other.to_owned()),
            },
        }),
        _ => Inbound::Other { kind, frame },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn identify() -> Outbound {
        Outbound::Identify(Identify {
            agent_id: "a1".into(),
            token: "s3cret".into(),
            name: "a1".into(),
            status: "idle",
            capabilities: vec!["code".into()],
            client_type: "sidecar",
            ollama_url: None,
        })
    }

    #[test]
    fn identify_has_exactly_the_node_fields() {
        let v: Value = serde_json::from_str(&identify().to_json()).unwrap();
        assert_eq!(
            v,
            json!({"type":"identify","agent_id":"a1","token":"s3cret","name":"a1","status":"idle",
                   "capabilities":["code"],"client_type":"sidecar","protocol_version":1})
        );
    }

    #[test]
    fn identify_carries_ollama_url_when_configured_and_the_hub_accepts_it() {
        let Outbound::Identify(mut id) = identify() else {
            unreachable!()
        };
        id.ollama_url = Some("http://10.0.0.5:11434".into());
        let v: Value = serde_json::from_str(&Outbound::Identify(id).to_json()).unwrap();
        assert_eq!(v["ollama_url"], "http://10.0.0.5:11434");
        assert_eq!(
            crate::hub::schema::validate(v.as_object().unwrap()),
            Ok("identify")
        );
    }

    #[test]
    fn ping_is_type_and_version_only() {
        let v: Value = serde_json::from_str(&Outbound::Ping {}.to_json()).unwrap();
        assert_eq!(v, json!({"type":"ping","protocol_version":1}));
    }

    #[test]
    fn debug_never_shows_the_token() {
        assert!(!format!("{:?}", identify()).contains("s3cret"));
    }

    #[test]
    fn parses_control_frames() {
        assert_eq!(
            parse_inbound(r#"{"agent_id":"a1","type":"identified"}"#),
            Ok(Inbound::Identified {
                agent_id: "a1".into()
            })
        );
        assert_eq!(
            parse_inbound(r#"{"timestamp":1795539977887,"type":"pong"}"#),
            Ok(Inbound::Pong)
        );
        assert_eq!(
            parse_inbound(r#"{"error":"invalid_token","type":"error"}"#),
            Ok(Inbound::Error(HubError::InvalidToken))
        );
        assert_eq!(
            parse_inbound(r#"{"retry_after_ms":1000,"tier":"normal","type":"rate_limited"}"#),
            Ok(Inbound::RateLimited {
                retry_after_ms: 1000,
                tier: "normal".into()
            })
        );
        assert!(matches!(
            parse_inbound(r#"{"error":"validation_failed","message_type":42,"errors":[],"type":"error"}"#),
            Ok(Inbound::Error(HubError::ValidationFailed { ref message_type, .. })) if message_type == "42"
        ));
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        assert!(matches!(parse_inbound("not json"), Err(FrameError::NotJson(_))));
        assert_eq!(parse_inbound("[1,2]"), Err(FrameError::NotAnObject));
        assert_eq!(parse_inbound(r#"{"type":5}"#), Err(FrameError::NoType));
        assert_eq!(
            parse_inbound(r#"{"type":"identified"}"#),
            Err(FrameError::BadField {
                kind: "identified".into(),
                field: "agent_id"
            })
        );
        assert_eq!(
            parse_inbound(&" ".repeat(MAX_FRAME_BYTES + 1)),
            Err(FrameError::TooLarge(MAX_FRAME_BYTES + 1))
        );
        assert!(matches!(
            parse_inbound(r#"{"type":"agent_joined","agent":{}}"#),
            Ok(Inbound::Other { .. })
        ));
    }

    #[test]
    fn task_complete_carries_the_verification_at_the_top_level_only_when_there_is_some() {
        let frame = |report: Option<Value>, history: Option<Vec<Value>>| Outbound::TaskComplete {
            task_id: "t1".into(),
            generation: 2,
            result: json!({"status":"success"}).as_object().unwrap().clone(),
            tokens_used: Some(7),
            verification_report: report,
            verification_history: history,
        };
        let bare: Value = serde_json::from_str(&frame(None, None).to_json()).unwrap();
        assert_eq!(
            bare,
            json!({"type":"task_complete","task_id":"t1","generation":2,"result":{"status":"success"},
                   "tokens_used":7,"protocol_version":1})
        );
        let report = json!({"task_id":"t1","run_number":1,"status":"pass","checks":[]});
        let full = frame(Some(report.clone()), Some(vec![report.clone()]));
        let v: Value = serde_json::from_str(&full.to_json()).unwrap();
        assert_eq!(v["verification_report"], report);
        assert_eq!(v["verification_history"], json!([report]));
        assert_eq!(v["result"], json!({"status":"success"}));
        assert_eq!(
            crate::hub::schema::validate(v.as_object().unwrap()),
            Ok("task_complete")
        );
    }

    fn resource_report(cpu: Option<f64>, ram: Option<u64>) -> Outbound {
        Outbound::ResourceReport {
            agent_id: "a1".into(),
            cpu_percent: cpu,
            ram_used_bytes: ram,
            ram_total_bytes: ram.map(|r| r * 2),
            vram_used_bytes: None,
            vram_total_bytes: None,
            timestamp: 1_795_539_977_887,
        }
    }

    #[test]
    fn resource_report_has_the_node_fields_with_null_vram() {
        let v: Value = serde_json::from_str(&resource_report(Some(12.5), Some(1 << 30)).to_json()).unwrap();
        assert_eq!(
            v,
            json!({"type":"resource_report","agent_id":"a1","cpu_percent":12.5,
                   "ram_used_bytes":1_073_741_824u64,"ram_total_bytes":2_147_483_648u64,
                   "vram_used_bytes":null,"vram_total_bytes":null,
                   "timestamp":1_795_539_977_887i64,"protocol_version":1})
        );
        let v: Value = serde_json::from_str(&resource_report(None, None).to_json()).unwrap();
        assert_eq!(v["cpu_percent"], Value::Null);
        assert_eq!(v["ram_total_bytes"], Value::Null);
    }

    #[test]
    fn resource_report_passes_the_hub_schema() {
        for frame in [
            resource_report(Some(0.0), Some(0)),
            resource_report(Some(100.0), Some(u64::from(u32::MAX) * 16)),
            resource_report(Some(37.1), None),
            resource_report(None, None),
        ] {
            let Value::Object(map) = serde_json::from_str(&frame.to_json()).unwrap() else {
                panic!("not an object");
            };
            assert_eq!(crate::hub::schema::validate(&map), Ok("resource_report"));
        }
    }
}
