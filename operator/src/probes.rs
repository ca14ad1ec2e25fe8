//! Probe traffic: golden documents sent to the canary and the baseline workers at a steady rate
//! while a step gathers evidence, so that a rollout with little real traffic still decides. The
//! workers count them apart (`source="probe"`), and the built-in checks count them as documents
//! like any other unless `probes.countAsEvidence` is false.
//!
//! One task per object, kept while the engine asks for the same probes and replaced when the
//! canary, baseline or rate changes. A probe is load, never a retry loop: a worker at capacity
//! refuses it (429) and the next tick tries the next document; a side whose probes are all still
//! in flight is skipped for that tick.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::time::MissedTickBehavior;

use crate::{
    background::{Task, lock},
    metrics::Metrics,
    quality,
};

/// Bytes of a probe's answer read before the connection is dropped.
const MAX_PROBE_ANSWER_BYTES: usize = 64 << 20;

/// Where and how fast one object's probes go.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbePlan {
    /// The canary worker revision, which fixes the documents' order.
    pub canary_revision: String,
    pub canary_url: String,
    /// None when the canary is judged alone.
    pub baseline: Option<quality::Endpoint>,
    /// Documents per hour to each side.
    pub documents_per_hour: f64,
    /// Probes in flight at once on each side.
    pub concurrency: usize,
    /// Budget of one probe.
    pub timeout: Duration,
}

impl ProbePlan {
    fn period(&self) -> Duration {
        Duration::from_secs_f64(3600.0 / self.documents_per_hour.max(1e-3))
    }
}

/// The probe senders running, one per MineruDeployment (`namespace/name`).
#[derive(Default)]
pub struct ProbeTraffic {
    senders: Mutex<HashMap<String, Sender>>,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for ProbeTraffic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let running = lock(&self.senders).len();
        f.debug_struct("ProbeTraffic")
            .field("running", &running)
            .finish()
    }
}

struct Sender {
    plan: ProbePlan,
    /// Dropping the sender (replaced, stopped) stops its probes.
    task: Task,
}

/// How one probe ended, as `mineru_operator_probe_documents_total{result}` counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeResult {
    /// The worker parsed it.
    Answered,
    /// The worker turned it away (at capacity, shedding) or did not answer in time.
    Refused,
    /// Not sent: this side's probes were all still in flight.
    Skipped,
}

impl ProbeResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeResult::Answered => "answered",
            ProbeResult::Refused => "refused",
            ProbeResult::Skipped => "skipped",
        }
    }
}

impl ProbeTraffic {
    /// Senders that count their probes in `metrics`.
    pub fn counted_in(metrics: Arc<Metrics>) -> Self {
        ProbeTraffic {
            senders: Mutex::default(),
            metrics: Some(metrics),
        }
    }

    /// Keeps `object`'s probes flowing as `plan` says: starts the sender, or replaces one with
    /// another plan or one that gave up (its documents could not be read); the documents come
    /// from `golden`, read when the sender starts.
    pub fn ensure<G>(&self, object: &str, plan: ProbePlan, http: &reqwest::Client, golden: G)
    where
        G: Future<Output = Result<BTreeMap<String, Vec<u8>>, String>> + Send + 'static,
    {
        let mut senders = lock(&self.senders);
        if senders
            .get(object)
            .is_some_and(|s| s.plan == plan && !s.task.is_finished())
        {
            return;
        }
        let task = Task::spawn(run(
            object.to_owned(),
            plan.clone(),
            http.clone(),
            self.metrics.clone(),
            golden,
        ));
        senders.insert(object.to_owned(), Sender { plan, task });
    }

    /// Stops `object`'s probes, if any flow.
    pub fn stop(&self, object: &str) {
        lock(&self.senders).remove(object);
    }
}

async fn run<G>(
    object: String,
    plan: ProbePlan,
    http: reqwest::Client,
    metrics: Option<Arc<Metrics>>,
    golden: G,
) where
    G: Future<Output = Result<BTreeMap<String, Vec<u8>>, String>>,
{
    let documents = match golden.await {
        Ok(documents) if !documents.is_empty() => documents,
        Ok(_) => {
            tracing::warn!(%object, "no golden documents to send as probes");
            return;
        }
        Err(error) => {
            tracing::warn!(%object, %error, "golden documents could not be read for probes");
            return;
        }
    };
    // Every document in turn, in the canary's fixed shuffle.
    let documents: Vec<(String, Arc<Vec<u8>>)> =
        quality::sample(documents, &plan.canary_revision, usize::MAX)
            .into_iter()
            .map(|(name, pdf)| (name, Arc::new(pdf)))
            .collect();
    let canary = quality::Endpoint::worker(plan.canary_url.clone());
    let sides: Vec<_> = std::iter::once(("canary", canary))
        .chain(plan.baseline.clone().map(|endpoint| ("baseline", endpoint)))
        .map(|(side, endpoint)| (side, endpoint, Arc::new(AtomicUsize::new(0))))
        .collect();
    // The probes in flight belong to this task: stopping or replacing the sender aborts them.
    let mut probes = tokio::task::JoinSet::new();
    let mut ticks = tokio::time::interval(plan.period());
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    for (name, pdf) in documents.iter().cycle() {
        ticks.tick().await;
        while probes.try_join_next().is_some() {}
        for (side, endpoint, in_flight) in &sides {
            let count = |result: ProbeResult| {
                if let Some(metrics) = &metrics {
                    metrics.probe(&object, side, result.as_str());
                }
            };
            if in_flight.fetch_add(1, Ordering::SeqCst) >= plan.concurrency {
                in_flight.fetch_sub(1, Ordering::SeqCst);
                count(ProbeResult::Skipped);
                continue;
            }
            let (http, endpoint, name, pdf, in_flight) = (
                http.clone(),
                endpoint.clone(),
                name.clone(),
                pdf.clone(),
                in_flight.clone(),
            );
            let timeout = plan.timeout;
            let metrics = metrics.clone();
            let (object, side) = (object.clone(), *side);
            probes.spawn(async move {
                let result = send(&http, &endpoint, &name, &pdf, timeout).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                if let Some(metrics) = metrics {
                    metrics.probe(&object, side, result.as_str());
                }
            });
        }
    }
}

/// Sends one probe document; never retried.
pub async fn send(
    http: &reqwest::Client,
    endpoint: &quality::Endpoint,
    document: &str,
    pdf: &[u8],
    timeout: Duration,
) -> ProbeResult {
    let Ok(request) = endpoint.request(http, document, pdf) else {
        return ProbeResult::Refused;
    };
    let url = &endpoint.url;
    let response = request
        .header(quality::SOURCE_HEADER, "probe")
        .timeout(timeout)
        .send()
        .await;
    match response {
        Ok(response) if response.status().is_success() => {
            // The answer is read to the end, so the worker counts the document as served, but
            // never held whole: a hostile worker image could answer without end.
            let mut response = response;
            let mut read = 0usize;
            while let Ok(Some(chunk)) = response.chunk().await {
                read += chunk.len();
                if read > MAX_PROBE_ANSWER_BYTES {
                    break;
                }
            }
            ProbeResult::Answered
        }
        Ok(response) => {
            tracing::debug!(status = %response.status(), %url, "probe refused");
            ProbeResult::Refused
        }
        Err(error) => {
            tracing::debug!(%error, %url, "probe not answered");
            ProbeResult::Refused
        }
    }
}
