//! The LLM registry's health checker: probes every endpoint's `GET /api/tags` every 30 s (5 s
//! timeout), records the outcomes in the registry ([`super::llm::Registry::record`]) and runs
//! the scheduler when an endpoint became routable or stopped being so.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{later, scheduler, Shared};

/// How often every endpoint is probed (the default of `HubOptions::llm_probe_interval`).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(30);
/// How long one probe may take: connect, request and answer (the default of
/// `HubOptions::llm_probe_timeout`).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest `/api/tags` answer read.
const MAX_ANSWER: usize = 1 << 20;

/// One `GET /api/tags` probe: the model names on a 200 with `{"models":[{"name":…}]}`, None on
/// any failure (refused, no answer within `limit`, another status, a body that is not that JSON).
pub async fn probe(host: &str, port: u16, limit: Duration) -> Option<Vec<String>> {
    tokio::time::timeout(limit, probe_inner(host, port))
        .await
        .ok()
        .flatten()
}

async fn probe_inner(host: &str, port: u16) -> Option<Vec<String>> {
    let mut tcp = TcpStream::connect((host, port)).await.ok()?;
    let request = format!(
        "GET /api/tags HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    (&mut tcp)
        .take(MAX_ANSWER as u64)
        .read_to_end(&mut raw)
        .await
        .ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut body = raw[split + 4..].to_vec();
    let status = head.split_whitespace().nth(1)?;
    if status != "200" {
        return None;
    }
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body)?;
    }
    let v: Value = serde_json::from_slice(&body).ok()?;
    let models = v.get("models")?.as_array()?;
    Some(
        models
            .iter()
            .filter_map(|m| m.get("name").and_then(Value::as_str).map(str::to_string))
            .collect(),
    )
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

/// Probes every registered endpoint once (concurrently) and records the outcomes; runs the
/// scheduler when an endpoint became routable or stopped being so.
pub async fn probe_all(shared: &Arc<Shared>) {
    let targets: Vec<(String, String, u16)> = shared
        .lock()
        .llm
        .endpoints
        .iter()
        .map(|e| (e.id.clone(), e.host.clone(), e.port))
        .collect();
    let limit = shared.opts.llm_probe_timeout;
    let probes = targets.into_iter().map(|(id, host, port)| async move {
        let outcome = probe(&host, port, limit).await;
        (id, outcome)
    });
    let outcomes = futures_util::future::join_all(probes).await;
    let mut st = shared.lock();
    let mut changed = false;
    for (id, outcome) in outcomes {
        changed |= st.llm.record(&id, outcome);
    }
    if changed {
        scheduler::schedule(shared, &mut st);
    }
}

/// The health checker: probes every endpoint every `llm_probe_interval`.
pub async fn health_loop(shared: Arc<Shared>) {
    let period = shared.opts.llm_probe_interval.max(Duration::from_millis(1));
    let mut next = later(Instant::now(), period);
    loop {
        tokio::time::sleep_until(next).await;
        next = later(next, period);
        probe_all(&shared).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").as_deref(),
            Some(&b"abcde"[..])
        );
    }
}
