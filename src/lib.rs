//! agentcom-sidecar: keeps an AI coding agent connected to an AgentCom hub.

pub mod event_log;
pub mod link;
pub mod protocol;
pub mod shutdown;
