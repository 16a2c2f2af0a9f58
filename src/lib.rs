//! agentcom-sidecar: keeps an AI coding agent connected to an AgentCom hub.

pub mod hub;
