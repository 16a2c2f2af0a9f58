//! The Ollama probes [`super::Runners::route`] waits for: `GET /api/tags` of an endpoint, its
//! answer cached per base URL for [`PROBE_TTL`], and the routed starts waiting for one.

use super::{RunRequest, Runners, TaskRunner};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// An Ollama probe in progress: the model names its `GET /api/tags` lists, or why it failed.
pub type ProbeFuture = Pin<Box<dyn Future<Output = Result<Vec<String>, String>>>>;

/// Asks an Ollama base URL (`http://host:port`) for its models (`ollama::probe`).
pub type ProbeFn = Box<dyn Fn(String) -> ProbeFuture>;

/// How long a probe's answer is trusted, per endpoint.
pub const PROBE_TTL: Duration = Duration::from_secs(30);

/// How long a probe may take before the endpoint counts as not answering.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// A routed task waiting for a probe of an Ollama endpoint.
struct Probing {
    url: String,
    request: RunRequest,
    fut: ProbeFuture,
}

/// The probes' answers and the probes in progress.
#[derive(Default)]
pub(super) struct Probes {
    /// Per Ollama base URL: when it was probed, and whether it answered (else why not).
    pub(super) answers: HashMap<String, (Instant, Result<(), String>)>,
    probing: Vec<Probing>,
}

impl Probes {
    /// A fresh probe result for `url`, if any.
    pub(super) fn probed(&self, url: &str) -> Option<Result<(), String>> {
        let (at, result) = self.answers.get(url)?;
        (at.elapsed() < PROBE_TTL).then(|| result.clone())
    }

    /// Probe `url` with `probe` (within [`PROBE_TIMEOUT`]); `request` is routed again once it
    /// answers.
    pub(super) fn start(&mut self, probe: &ProbeFn, url: String, request: RunRequest) {
        let fut = probe(url.clone());
        self.probing.push(Probing {
            url,
            request,
            fut: Box::pin(async move {
                tokio::time::timeout(PROBE_TIMEOUT, fut)
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())))
            }),
        });
    }

    /// Keep only the waiting requests `keep` accepts.
    pub(super) fn retain(&mut self, keep: impl Fn(&RunRequest) -> bool) {
        self.probing.retain(|p| keep(&p.request));
    }

    /// The first probe to end, taken out with its answer.
    pub(super) fn poll_ended(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<(String, Result<Vec<String>, String>, RunRequest)> {
        for i in 0..self.probing.len() {
            if let Poll::Ready(result) = self.probing[i].fut.as_mut().poll(cx) {
                let p = self.probing.remove(i);
                return Poll::Ready((p.url, result, p.request));
            }
        }
        Poll::Pending
    }

    /// Cache the answer for `url`; the requests that waited for it, `request` first.
    fn ended(
        &mut self,
        url: String,
        result: Result<Vec<String>, String>,
        request: RunRequest,
    ) -> Vec<RunRequest> {
        self.answers
            .insert(url.clone(), (Instant::now(), result.map(|_| ())));
        let mut requests = vec![request];
        let mut j = 0;
        while j < self.probing.len() {
            if self.probing[j].url == url {
                requests.push(self.probing.remove(j).request);
            } else {
                j += 1;
            }
        }
        requests
    }
}

impl Runners {
    /// A probe ended: cache its answer and route again every task that waited for it.
    pub(super) fn probe_ended(
        &mut self,
        url: String,
        result: Result<Vec<String>, String>,
        request: RunRequest,
    ) {
        for request in self.probes.ended(url, result, request) {
            let inputs = self.handle(request);
            self.ready.extend(inputs);
        }
    }
}
