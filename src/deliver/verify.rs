//! Runs a task's `verification_steps` and builds the report (protocol §11.8).
