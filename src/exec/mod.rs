//! How a task runs: waking the agent with its configured command, rendered from a template.
//!
//! `template` renders the wake command with the task's values, quoted per shell context;
//! `wake` runs it and reports how it ended; `process` starts children without the token and
//! finds and stops a task's agent by process group. Nothing here knows the task lifecycle:
//! [`crate::relay`] decides when to run what.

pub mod process;
#[cfg(target_os = "linux")]
mod procfs;
pub mod template;
pub mod wake;
