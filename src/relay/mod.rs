//! The task lifecycle: from `task_assign` to the agent and back to the hub, losing nothing.
//!
//! `machine` is the sans-IO state machine; `store` persists it to queue.json; `watch` turns the
//! agent's files into events; `runtime` wires them up and hands out what it does not do itself:
//! frames to send, link holds, and run requests, which [`crate::exec`] carries out.

pub mod machine;
pub mod runtime;
pub mod store;
pub mod task;
pub mod watch;
