//! The task lifecycle: from `task_assign` to the agent and back to the hub, losing nothing.
//!
//! `machine` is the sans-IO state machine; `store` persists it to queue.json; `watch` turns the
//! agent's files into events; `runtime` wires them up, running the agent's wake command with
//! [`crate::exec`].

pub mod machine;
pub mod runtime;
pub mod store;
pub mod task;
pub mod watch;

/// The former home of the wake command's code, now [`crate::exec`]; kept so that imports of
/// `relay::wake::...` keep working.
pub mod wake {
    pub use crate::exec::process::*;
    pub use crate::exec::template::*;
    pub use crate::exec::wake::*;
}
