//! Delivering finished work the way the hub's pipeline expects (protocol §11.8-§11.9): the task's
//! verification checks, its workspace, and its branch, commit, push and pull request.
//!
//! - `verify`: runs a task's `verification_steps` (each check in its own process group with its own
//!   timeout) and builds the report the hub stores;
//! - `workspace`: the clone a task with a `repo` works in;
//! - `git`: git as an argument vector (never a shell), with timeouts;
//! - `pr`: the branch at accept, then commit, push and the pull request after verification.

pub mod git;
pub mod pr;
pub mod verify;
pub mod workspace;
