//! The hub's REST API (protocol §7): registration, revocation, tasks and classification, over
//! the one HTTP client.
