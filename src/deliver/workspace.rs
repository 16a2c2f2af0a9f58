//! The clone a task with a `repo` works in, under `workspaces_dir` (protocol §11.9).
