//! Frames the sidecar sends to the hub ([`Outbound`]), and the limit on their `reason` strings.

use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;

use super::PROTOCOL_VERSION;

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
