//! agentcom-sidecar: keeps an AI coding agent connected to an AgentCom hub.

pub mod check;
pub mod config;
pub mod daemon;
pub mod deliver;
pub mod demo;
pub mod event_log;
pub mod exec;
pub mod files;
pub mod hub;
pub mod hub_api;
pub mod init;
pub mod link;
pub mod lock;
pub mod protocol;
pub mod relay;
pub mod resources;
pub mod secrets;
pub mod service;
pub mod shutdown;
pub mod status;
pub mod trial;

/// The process exit codes, documented in `--help`.
pub mod exit_code {
    /// A fatal runtime error.
    pub const FATAL: u8 = 1;
    /// Another sidecar holds the state folder's lock (sysexits' EX_CANTCREAT).
    pub const ALREADY_RUNNING: u8 = 73;
    /// The hub asked for a restart (sysexits' EX_TEMPFAIL); the service unit restarts on it.
    pub const RESTART: u8 = 75;
    /// The config file is missing or invalid (sysexits' EX_CONFIG).
    pub const CONFIG: u8 = 78;
}
