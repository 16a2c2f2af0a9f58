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
    /// Any other well-formed frame: informational pushes, and types the link does not handle.
    Other {
        /// The frame's `type`.
        kind: String,
        /// The whole frame.
        frame: Map<String, Value>,
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
            other => HubError::Other(other.to_owned()),
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
}
