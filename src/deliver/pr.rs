//! The task's branch at accept; commit, push and the pull request after verification (§11.9).
