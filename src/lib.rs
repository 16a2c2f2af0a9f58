//! agentcom-sidecar: keeps an AI coding agent connected to an AgentCom hub.

pub mod check;
pub mod config;
pub mod daemon;
pub mod deliver;
pub mod demo;
pub mod event_log;
pub mod exec;
pub mod files;
pub mod http;
pub mod hub;
pub mod hub_api;
pub mod init;
pub mod link;
pub mod lock;
pub mod onboard;
pub mod protocol;
pub mod relay;
pub mod resources;
pub mod secrets;
pub mod service;
pub mod shutdown;
pub mod status;
pub mod submit;
pub mod tasks;
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
    /// The hub refused what was sent (sysexits' EX_DATAERR): a 4xx other than 401/403.
    pub const DATAERR: u8 = 65;
    /// The hub could not be reached, was busy (429) or failed (5xx) (sysexits' EX_UNAVAILABLE).
    pub const UNAVAILABLE: u8 = 69;
    /// The hub answered something the protocol does not say it answers (sysexits' EX_PROTOCOL).
    pub const PROTOCOL: u8 = 76;
    /// The hub refused the token (401/403) (sysexits' EX_NOPERM).
    pub const NOPERM: u8 = 77;
}
