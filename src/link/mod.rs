//! The hub connection: a sans-IO [`policy::LinkPolicy`] (backoff, heartbeat, identify) and the
//! [`socket`], which opens a WebSocket and reads and writes its frames. The loop that carries out
//! the policy's actions is the daemon's (`crate::daemon`).

pub mod backoff;
pub mod connect;
pub mod policy;
pub mod socket;

use crate::config::Config;
use crate::protocol::Identify;
use backoff::BackoffSettings;
use policy::LinkSettings;

impl LinkSettings {
    /// The link settings a config asks for.
    pub fn from_config(config: &Config) -> LinkSettings {
        LinkSettings {
            hub_url: config.hub_url.clone(),
            identify: Identify {
                agent_id: config.agent_id.clone(),
                token: config.token.expose().to_owned(),
                name: config.name.clone(),
                status: "idle",
                capabilities: config.capabilities.clone(),
                client_type: "sidecar",
                ollama_url: config.ollama_url.clone(),
            },
            heartbeat_interval: config.heartbeat_interval,
            heartbeat_timeout: config.heartbeat_timeout,
            backoff: BackoffSettings {
                initial: config.reconnect_initial,
                max: config.reconnect_max,
                jitter: config.reconnect_jitter,
            },
        }
    }
}
