//! The hub's LLM registry (`llm_registry.ex`): Ollama endpoints registered through
//! `/api/admin/llm-registry` or an identify's `ollama_url`, in registration order, with their
//! health as the checker ([`super::llm_health`]) records it: 200 with models -> `healthy`, two
//! failures in a row -> `unhealthy`, `unknown` until the first check. Free of I/O.

use serde_json::{json, Value};

use super::complexity::Candidate;
use super::epoch_ms;

/// One registered endpoint.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `host:port`, the id the router puts in `selected_endpoint`.
    pub id: String,
    /// A display name (`<agent_id>-local` for an identify's `ollama_url`).
    pub name: String,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `unknown`, `healthy` or `unhealthy`.
    pub status: &'static str,
    /// Model names from the last successful `/api/tags`.
    pub models: Vec<String>,
    /// Failed probes in a row.
    pub failures: u32,
    /// `manual` (HTTP) or `auto` (identify).
    pub source: &'static str,
    /// Epoch ms of the (last) registration.
    pub registered_at: u64,
    /// Epoch ms of the last probe, if any.
    pub last_checked_at: Option<u64>,
}

impl Endpoint {
    /// The endpoint as `GET /api/admin/llm-registry` lists it.
    pub fn to_json(&self) -> Value {
        json!({"id": self.id, "name": self.name, "host": self.host, "port": self.port,
            "status": self.status, "models": self.models, "source": self.source,
            "registered_at": self.registered_at, "last_checked_at": self.last_checked_at})
    }
}

/// The registry: endpoints in registration order (the first healthy one wins a routing).
#[derive(Debug, Default)]
pub struct Registry {
    /// Registered endpoints, oldest first.
    pub endpoints: Vec<Endpoint>,
}

impl Registry {
    /// Registers (or re-registers) `host:port`: a re-registration resets it to `unknown` with no
    /// models, as the real hub's upsert does. Returns the stored endpoint.
    pub fn upsert(&mut self, host: &str, port: u16, name: &str, source: &'static str) -> Endpoint {
        let id = format!("{host}:{port}");
        let ep = Endpoint {
            id: id.clone(),
            name: name.to_string(),
            host: host.to_string(),
            port,
            status: "unknown",
            models: Vec::new(),
            failures: 0,
            source,
            registered_at: epoch_ms(),
            last_checked_at: None,
        };
        match self.endpoints.iter_mut().find(|e| e.id == id) {
            Some(old) => *old = ep.clone(),
            None => self.endpoints.push(ep.clone()),
        }
        ep
    }

    /// Removes an endpoint; false if there was none with that id.
    pub fn remove(&mut self, id: &str) -> bool {
        let before = self.endpoints.len();
        self.endpoints.retain(|e| e.id != id);
        self.endpoints.len() != before
    }

    /// Records a probe's outcome (`Some(models)` for a 200 with a model list). Returns true when
    /// the endpoint's routability changed (the scheduler should run).
    pub fn record(&mut self, id: &str, outcome: Option<Vec<String>>) -> bool {
        let Some(ep) = self.endpoints.iter_mut().find(|e| e.id == id) else {
            return false;
        };
        let was = ep.status == "healthy" && !ep.models.is_empty();
        ep.last_checked_at = Some(epoch_ms());
        match outcome {
            Some(models) => {
                ep.status = "healthy";
                ep.failures = 0;
                ep.models = models;
            }
            None => {
                ep.failures += 1;
                if ep.failures >= 2 {
                    ep.status = "unhealthy";
                }
            }
        }
        was != (ep.status == "healthy" && !ep.models.is_empty())
    }

    /// Healthy endpoints with a non-empty model list, in registration order.
    pub fn candidates(&self) -> Vec<Candidate> {
        self.endpoints
            .iter()
            .filter(|e| e.status == "healthy")
            .filter_map(|e| {
                e.models.first().map(|m| Candidate {
                    id: e.id.clone(),
                    first_model: m.clone(),
                })
            })
            .collect()
    }
}

/// Host and port of an `ollama_url` as the real hub parses it: host defaults to `localhost`,
/// port to 11434. None when it is not an http(s) URL.
pub fn parse_ollama_url(url: &str) -> Option<(String, u16)> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        let port = after.strip_prefix(':');
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => 11434,
    };
    let host = if host.is_empty() {
        "localhost".to_string()
    } else {
        host
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ollama_urls_parse_like_the_hub() {
        let p = |u: &str| parse_ollama_url(u);
        assert_eq!(p("http://10.0.0.5:11434"), Some(("10.0.0.5".into(), 11434)));
        assert_eq!(p("http://gpu-box"), Some(("gpu-box".into(), 11434)));
        assert_eq!(p("http://:8080/"), Some(("localhost".into(), 8080)));
        assert_eq!(p("http://[::1]:9000/x"), Some(("::1".into(), 9000)));
        assert_eq!(p("http://h:notaport"), None);
    }

    #[test]
    fn two_failures_make_unhealthy_and_one_success_recovers() {
        let mut r = Registry::default();
        r.upsert("127.0.0.1", 1, "a", "manual");
        assert_eq!(r.endpoints[0].status, "unknown");
        assert!(r.candidates().is_empty());
        assert!(!r.record("127.0.0.1:1", None));
        assert_eq!(r.endpoints[0].status, "unknown");
        r.record("127.0.0.1:1", None);
        assert_eq!(r.endpoints[0].status, "unhealthy");
        assert!(r.record("127.0.0.1:1", Some(vec!["m".into()])));
        assert_eq!(r.candidates()[0].first_model, "m");
        // Healthy without models is not routable.
        assert!(r.record("127.0.0.1:1", Some(vec![])));
        assert!(r.candidates().is_empty());
        // Re-registering resets it.
        r.record("127.0.0.1:1", Some(vec!["m".into()]));
        r.upsert("127.0.0.1", 1, "b", "auto");
        assert_eq!((r.endpoints.len(), r.endpoints[0].status), (1, "unknown"));
        assert!(r.remove("127.0.0.1:1"));
        assert!(!r.remove("127.0.0.1:1"));
    }
}
