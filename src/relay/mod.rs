//! Relaying tasks between the hub and the agent.

pub mod watch;
