//! Everything around the pure rollout engine for one reconcile: ask the engine what it needs
//! ([`rollout::needs`]), fetch it — the canary vLLM's warm-up, preflight, GPU capacity, the
//! Prometheus readings, the golden documents — and call [`rollout::step`]. The engine decides
//! and judges; this module only fetches.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{Client, ResourceExt};
use mineru_crds::{LegacyApi, MineruDeployment, QualitySpec, Revisions};

use crate::{
    VLLM_PORT, WORKER_PORT, capacity,
    gates::reading::Measured,
    gates::round::{self, Subject},
    labels,
    outbound::{self, OutboundPolicy},
    preflight,
    probes::{ProbePlan, ProbeTraffic},
    quality::{Api, Endpoint},
    quality_rounds::{Comparison, Progress, QualityRounds},
    rollout::{
        self, AnalysisRound, Baseline, CapacityRead, Command, Decision, Input, Needs, Observed,
        ProbeRequest, QualityRequest, ReadingRequest, ReadingResult, Sizes,
    },
    scope::WatchScope,
    sources,
    warmup::{self, ServiceResolver},
};

/// The clients and settings the driver reaches the outside world with.
#[derive(Clone, Debug)]
pub struct RolloutIo {
    /// HTTP client for worker, vLLM and webhook calls.
    pub http: reqwest::Client,
    /// Where in-cluster Services are reached.
    pub resolver: ServiceResolver,
    /// Budget of one warm-up request.
    pub warmup_timeout: Duration,
    /// Budget of one golden document on one worker.
    pub quality_timeout: Duration,
    /// Golden documents compared at once in a round.
    pub quality_concurrency: usize,
    /// The golden-document rounds running in the background.
    pub quality_rounds: Arc<QualityRounds>,
    /// The probe traffic flowing in the background.
    pub probes: Arc<ProbeTraffic>,
    /// The hosts a spec may make the operator call and the Secrets it may read.
    pub outbound: OutboundPolicy,
    /// The namespaces the operator watches (and may read pods in, for GPU capacity).
    pub scope: WatchScope,
    /// How long a new API key has been in its Secret before vLLM restarts with it: the time
    /// the kubelet takes to hand it to the workers.
    pub key_propagation: Duration,
}

impl Default for RolloutIo {
    fn default() -> Self {
        RolloutIo {
            http: outbound::http_client(reqwest::Client::builder())
                .expect("a client without TLS roots or a proxy always builds"),
            resolver: ServiceResolver::default(),
            warmup_timeout: Duration::from_secs(60),
            quality_timeout: Duration::from_secs(300),
            quality_concurrency: 4,
            quality_rounds: Arc::default(),
            probes: Arc::default(),
            outbound: OutboundPolicy::default(),
            scope: WatchScope::Cluster,
            key_propagation: Duration::from_secs(180),
        }
    }
}

/// Gathers what the engine needs and asks it what to do now.
pub async fn decide(
    client: &Client,
    io: &RolloutIo,
    md: &MineruDeployment,
    desired: Revisions,
    observed: Observed,
    commands: Vec<Command>,
    now: Timestamp,
) -> Decision {
    let mut input = Input {
        generation: md.metadata.generation,
        rollout: md.spec.rollout.clone(),
        sizes: Sizes::of(&md.spec),
        desired,
        status: md.status.clone().unwrap_or_default(),
        observed,
        analysis: None,
        commands,
        now,
    };
    let needs = rollout::needs(&input);
    fetch(client, io, md, &needs, &mut input).await;
    rollout::step(&input)
}

async fn fetch(
    client: &Client,
    io: &RolloutIo,
    md: &MineruDeployment,
    needs: &Needs,
    input: &mut Input,
) {
    let namespace = md.namespace().unwrap_or_default();
    let name = md.name_any();
    if let Some(revision) = &needs.warmup {
        let url = io
            .resolver
            .url(&namespace, &labels::names::vllm(&name, revision), VLLM_PORT);
        let model = md.spec.model.served_model_name();
        let api_key = sources::api_key(client, &io.outbound, md).await;
        match warmup::probe(&url, model, api_key, io.warmup_timeout).await {
            Ok(()) => {
                input.observed.warmed_up.insert(revision.clone());
            }
            Err(error) => tracing::info!(%error, "canary vLLM not warm yet"),
        }
    }
    if let Some(canary) = &needs.preflight {
        input.observed.preflight =
            preflight::check(client, &io.outbound, md, canary, input.now).await;
    }
    if let Some(read) = needs.capacity {
        match capacity::read(
            client,
            &io.scope,
            &md.spec.model,
            read == CapacityRead::Free,
            capacity::PAGE,
        )
        .await
        {
            Ok(capacity) => {
                input.observed.free_gpus = capacity.free;
                input
                    .observed
                    .preflight
                    .extend(capacity.problem(&md.spec.model));
            }
            // Unknown capacity: the engine still notices canary pods left unschedulable.
            Err(error) => tracing::warn!(%error, "GPU capacity could not be read"),
        }
    }
    send_probes(client, io, md, needs.probes.as_ref());
    let quality = compare(client, io, md, needs.quality.as_ref());
    if needs.readings.is_empty() && quality.results.is_empty() {
        return;
    }
    let readings = readings(client, &io.outbound, md, &needs.readings).await;
    input.analysis = Some(AnalysisRound {
        at: input.now,
        readings,
        quality: quality.results,
        quality_documents: quality.documents,
    });
}

async fn readings(
    client: &Client,
    policy: &OutboundPolicy,
    md: &MineruDeployment,
    requests: &[ReadingRequest],
) -> Vec<ReadingResult> {
    if requests.is_empty() {
        return Vec::new();
    }
    let namespace = md.namespace().unwrap_or_default();
    let name = md.name_any();
    match sources::prometheus(client, policy, md).await {
        Ok(source) => {
            let subject = Subject {
                namespace: &namespace,
                name: &name,
                interval: md.spec.rollout.analysis.interval.get(),
            };
            round::read(requests, subject, &source).await
        }
        Err(error) => requests
            .iter()
            .map(|request| failed(request, &error))
            .collect(),
    }
}

/// A request that could not be read at all: every reading its source has is the error.
fn failed(request: &ReadingRequest, error: &str) -> ReadingResult {
    ReadingResult {
        check: request.check.clone(),
        kind: request.kind,
        role: request.role,
        revision: request.revision.clone(),
        query: None,
        measured: Measured::failed(&request.source, error),
    }
}

/// The golden-document round the engine asked for, as far as it has come: it runs in the
/// background (`quality_rounds`) and is collected here each reconcile. Not comparing is not a
/// regression: without results the quality check stays unanswered and the step holds.
fn compare(
    client: &Client,
    io: &RolloutIo,
    md: &MineruDeployment,
    request: Option<&QualityRequest>,
) -> Progress {
    let namespace = md.namespace().unwrap_or_default();
    let name = md.name_any();
    let object = format!("{namespace}/{name}");
    let (Some(request), Some(spec)) = (request, &md.spec.rollout.analysis.quality) else {
        io.quality_rounds.cancel(&object);
        return Progress::default();
    };
    let Some(baseline) = baseline(io, md, &request.baseline) else {
        return Progress::default();
    };
    let comparison = Comparison {
        canary_revision: request.judged.clone(),
        baseline,
        canary_url: worker_url(io, md, &request.judged),
        documents: request.documents,
        min_similarity: spec.min_similarity,
        timeout: io.quality_timeout,
        concurrency: io.quality_concurrency,
    };
    let golden = golden(client, md, spec);
    let done = md
        .status
        .as_ref()
        .map_or(&[][..], |status| status.quality.as_slice());
    let progress = io
        .quality_rounds
        .poll(&object, comparison, done, &io.http, golden);
    if let Some(error) = &progress.error {
        tracing::warn!(%error, "golden documents could not be compared; starting the round again");
    }
    progress
}

/// Keeps the probe traffic the engine asks for flowing, or stops it.
fn send_probes(
    client: &Client,
    io: &RolloutIo,
    md: &MineruDeployment,
    request: Option<&ProbeRequest>,
) {
    let object = format!("{}/{}", md.namespace().unwrap_or_default(), md.name_any());
    let plan = request.zip(md.spec.rollout.analysis.quality.as_ref());
    let Some((request, spec)) = plan else {
        io.probes.stop(&object);
        return;
    };
    let baseline = match &request.baseline {
        Some(which) => match baseline(io, md, which) {
            Some(endpoint) => Some(endpoint),
            None => {
                io.probes.stop(&object);
                return;
            }
        },
        None => None,
    };
    let plan = ProbePlan {
        canary_revision: request.judged.clone(),
        canary_url: worker_url(io, md, &request.judged),
        baseline,
        documents_per_hour: request.documents_per_hour,
        concurrency: request.concurrency,
        timeout: io.quality_timeout,
    };
    io.probes
        .ensure(&object, plan, &io.http, golden(client, md, spec));
}

/// Where a worker revision of `md` parses.
fn worker_url(io: &RolloutIo, md: &MineruDeployment, revision: &str) -> String {
    let service = labels::names::worker(&md.name_any(), revision);
    io.resolver
        .url(&md.namespace().unwrap_or_default(), &service, WORKER_PORT)
}

/// Where the baseline parses: its stable workers, or the legacy Service (in its own API)
/// during a migration.
fn baseline(io: &RolloutIo, md: &MineruDeployment, baseline: &Baseline) -> Option<Endpoint> {
    match (baseline, md.spec.rollout.legacy_backend()) {
        (Baseline::Stable(stable), _) => Some(Endpoint::worker(worker_url(
            io,
            md,
            &stable.worker_revision,
        ))),
        (Baseline::Legacy, Some(legacy)) => Some(Endpoint {
            url: io.resolver.url(
                &md.namespace().unwrap_or_default(),
                &legacy.name,
                legacy.port,
            ),
            api: match legacy.api {
                LegacyApi::FileParse => Api::FileParse,
                LegacyApi::V1 => Api::V1 {
                    tier: legacy.tier.map(|t| t.as_str().to_owned()),
                },
            },
        }),
        (Baseline::Legacy, None) => {
            tracing::warn!("no legacy Service to send golden documents to");
            None
        }
    }
}

/// Reads the golden documents, in the background.
fn golden(
    client: &Client,
    md: &MineruDeployment,
    spec: &QualitySpec,
) -> impl std::future::Future<Output = Result<BTreeMap<String, Vec<u8>>, String>> + Send + 'static {
    let (client, source) = (client.clone(), spec.golden_documents.clone());
    let namespace = md.namespace().unwrap_or_default();
    async move { sources::golden_documents(&client, &namespace, &source).await }
}
