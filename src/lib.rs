//! agentcom-sidecar: keeps an AI coding agent connected to an AgentCom hub.

pub mod config;
pub mod demo;
pub mod event_log;
pub mod hub;
pub mod link;
pub mod protocol;
pub mod relay;
pub mod resources;
pub mod shutdown;

/// The process exit codes, documented in `--help`.
pub mod exit_code {
    /// A fatal runtime error.
    pub const FATAL: u8 = 1;
    /// The config file is missing or invalid (sysexits' EX_CONFIG).
    pub const CONFIG: u8 = 78;
}
