//! Git as an argument vector, never through a shell, each call with a timeout (protocol §11.9).
