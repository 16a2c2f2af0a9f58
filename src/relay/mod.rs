//! The task lifecycle: from `task_assign` to the agent and back to the hub, losing nothing.
//!
//! `machine` is the sans-IO state machine; `store` persists it to queue.json; `wake` runs the
//! agent's wake command; `watch` turns the agent's files into events; `runtime` wires them up.

pub mod machine;
pub mod runtime;
pub mod store;
pub mod task;
pub mod wake;
pub mod watch;
