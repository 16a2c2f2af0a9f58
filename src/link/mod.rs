//! The hub connection: a sans-IO [`policy::LinkPolicy`] (backoff, heartbeat, identify) and the
//! async [`socket`] driver that carries out its actions on a real WebSocket.

pub mod backoff;
pub mod policy;
pub mod socket;
