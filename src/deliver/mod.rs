//! Delivering finished work the way the hub's pipeline expects (protocol §11.8-§11.9): the task's
//! verification checks, its workspace, and its branch, commit, push and pull request.
//!
//! - `verify`: runs a task's `verification_steps` (each check in its own process group with its own
//!   timeout) and builds the report the hub stores;
//! - `workspace`: the clone a task with a `repo` works in;
//! - `git`: git as an argument vector (never a shell), with timeouts;
//! - `pr`: the branch at accept, then commit, push and the pull request after verification;
//! - `pipeline`: all of it behind `exec::pipeline::Pipeline`, the seam the runners call.

pub mod git;
pub mod pipeline;
pub mod pr;
pub mod verify;
pub mod workspace;

/// The pipeline a config asks for, boxed for `exec::Runners::new`: workspaces under
/// `workspaces_dir`, branches in `repo_dir`, the task's checks, commit, push, pull request with
/// `gh_command`, and the hub's classification at `hub_api_url`.
pub fn pipeline(config: &crate::config::Config) -> Box<dyn crate::exec::pipeline::Pipeline> {
    Box::new(pipeline::DeliveryPipeline::new(config))
}
