//! How a task runs: waking the agent with its configured command, rendered from a template.
//!
//! `wake` renders and runs the wake command, kills it and the agent it started.
//! Nothing here knows the task lifecycle: [`crate::relay`] decides when to run what.

pub mod wake;
