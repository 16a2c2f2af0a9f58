//! Frames the hub sends to the sidecar ([`Inbound`]), and `parse_inbound`, which reads them from raw text.

use serde_json::{Map, Value};
use std::fmt;

/// The largest inbound text frame the sidecar accepts (the hub's own frames are a few KiB).
pub const MAX_FRAME_BYTES: usize = 1 << 20;

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
