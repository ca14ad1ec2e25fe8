//! Everything around the pure rollout engine for one reconcile: probe the canary vLLM's
//! warm-up, run the analysis round the engine asks for (Prometheus checks, golden documents),
//! and call [`rollout::step`]. The engine decides; this module only fetches what it needs.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret, Service},
    jiff::Timestamp,
};
use kube::{Api, Client, ResourceExt, api::ListParams};
use mineru_crds::{
    GoldenDocuments, MineruDeployment, MineruDeploymentStatus, Revisions, Tier, Verdict,
};

use crate::{
    VLLM_PORT, WORKER_PORT, capacity,
    gates::{
        self, Source,
        prometheus::{Credentials, PrometheusSource},
        round::{self, Subject},
        template,
        verdict::{Evaluation, Reading},
    },
    labels, quality,
    rollout::{
        self, AnalysisRequest, AnalysisRound, Baseline, CheckResult, Command, Decision, Input,
        Observed, Sizes,
    },
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
}

impl Default for RolloutIo {
    fn default() -> Self {
        RolloutIo {
            http: reqwest::Client::new(),
            resolver: ServiceResolver::default(),
            warmup_timeout: Duration::from_secs(60),
            quality_timeout: Duration::from_secs(300),
        }
    }
}

/// Gathers what the engine needs and asks it what to do now.
pub async fn decide(
    client: &Client,
    io: &RolloutIo,
    md: &MineruDeployment,
    desired: Revisions,
    mut observed: Observed,
    commands: Vec<Command>,
    now: Timestamp,
) -> Decision {
    let namespace = md.namespace().unwrap_or_default();
    let status = md.status.clone().unwrap_or_default();
    let migrating = migrating(md, &status);
    match warmup(&status, migrating, &desired, &observed) {
        Warmup::NotApplicable => {}
        Warmup::Passed(revision) => {
            observed.warmed_up.insert(revision);
        }
        Warmup::Probe(revision) => {
            let url = io.resolver.url(
                &namespace,
                &labels::names::vllm(&md.name_any(), &revision),
                VLLM_PORT,
            );
            let api_key = match &md.spec.model.api_key_secret_ref {
                Some(reference) => {
                    secret_value(client, &namespace, &reference.name, &reference.key)
                        .await
                        .ok()
                        .flatten()
                }
                None => None,
            };
            let model = md.spec.model.served_model_name();
            match warmup::probe(&url, model, api_key, io.warmup_timeout).await {
                Ok(()) => {
                    observed.warmed_up.insert(revision);
                }
                Err(error) => tracing::info!(%error, "canary vLLM not warm yet"),
            }
        }
    }

    if before_first_traffic(&status, migrating, &desired) {
        observed.preflight = preflight(client, md, migrating, &desired).await;
        if new_model(&status, migrating, &desired) {
            // Free GPUs decide in-place replacement when the rollout starts; later rounds only
            // ask whether any node could fit a replica, which needs no cluster-wide pod list.
            let starting = status.canary.as_ref() != Some(&desired);
            match capacity::read(client, &md.spec.model, starting).await {
                Ok(capacity) => {
                    observed.free_gpus = capacity.free;
                    observed.preflight.extend(capacity.problem(&md.spec.model));
                }
                // Unknown capacity: the engine still notices canary pods left unschedulable.
                Err(error) => tracing::warn!(%error, "GPU capacity could not be read"),
            }
        }
    }

    let mut input = Input {
        generation: md.metadata.generation,
        rollout: md.spec.rollout.clone(),
        sizes: Sizes::of(&md.spec),
        desired,
        status,
        observed,
        analysis: None,
        commands,
        now,
    };
    if let Some(request) = rollout::analysis_request(&input) {
        input.analysis = Some(analyse(client, io, md, &request, now).await);
    }
    rollout::step(&input)
}

/// The legacy Service the spec migrates from, while it is still the baseline (no stable yet).
fn migrating(md: &MineruDeployment, status: &MineruDeploymentStatus) -> bool {
    md.spec.rollout.legacy_backend().is_some() && status.stable.is_none()
}

/// Whether the desired vLLM is not stable's: a new model to place and warm up. The first
/// deployment has none, unless a legacy Service serves the traffic meanwhile.
fn new_model(status: &MineruDeploymentStatus, migrating: bool, desired: &Revisions) -> bool {
    match &status.stable {
        Some(stable) => stable.model_revision != desired.model_revision,
        None => migrating,
    }
}

/// A rollout whose canary has not had traffic yet: the moment preflight runs.
fn before_first_traffic(
    status: &MineruDeploymentStatus,
    migrating: bool,
    desired: &Revisions,
) -> bool {
    let rolling = match &status.stable {
        Some(stable) => stable != desired,
        None => migrating,
    };
    let serving = status.canary.as_ref() == Some(desired) && status.canary_weight.unwrap_or(0) > 0;
    rolling && !serving && !status.failed_revisions.contains(desired)
}

/// What the canary needs before its first traffic: Prometheus answering and every gate query
/// accepted, the API key Secret, the golden-document ConfigMap, and when migrating the legacy
/// Service. Each problem is a sentence.
async fn preflight(
    client: &Client,
    md: &MineruDeployment,
    migrating: bool,
    canary: &Revisions,
) -> Vec<String> {
    let namespace = md.namespace().unwrap_or_default();
    let name = md.name_any();
    let mut problems = Vec::new();
    if let Some(legacy) = md.spec.rollout.legacy_backend()
        && migrating
    {
        match Api::<Service>::namespaced(client.clone(), &namespace)
            .get_opt(&legacy.name)
            .await
        {
            Ok(Some(_)) => {}
            Ok(None) => problems.push(format!(
                "legacy Service {namespace}/{} not found",
                legacy.name
            )),
            Err(error) => problems.push(format!(
                "legacy Service {namespace}/{}: {}",
                legacy.name,
                api_message(&error)
            )),
        }
    }
    if let Some(reference) = &md.spec.model.api_key_secret_ref {
        match secret_value(client, &namespace, &reference.name, &reference.key).await {
            Ok(Some(_)) => {}
            Ok(None) => problems.push(format!(
                "API key Secret {namespace}/{} has no key {:?}",
                reference.name, reference.key
            )),
            Err(error) => problems.push(error),
        }
    }
    let analysis = &md.spec.rollout.analysis;
    if let Some(quality) = &analysis.quality
        && let Err(error) = golden_documents(client, &namespace, &quality.golden_documents).await
    {
        problems.push(error);
    }
    let queries: Vec<_> = gates::checks(analysis, migrating)
        .into_iter()
        .filter_map(|check| match &check.source {
            Source::Query(template) => Some((check.clone(), template.clone())),
            _ => None,
        })
        .collect();
    if queries.is_empty() {
        return problems;
    }
    let Some(spec) = &analysis.prometheus else {
        problems.push("analysis.prometheus is not set but gates need it".to_owned());
        return problems;
    };
    let credentials = match &spec.auth_secret_ref {
        Some(reference) => prometheus_credentials(client, &namespace, &reference.name).await,
        None => Ok(None),
    };
    let source = match credentials.and_then(|credentials| {
        PrometheusSource::new(spec, credentials.as_ref()).map_err(|error| error.to_string())
    }) {
        Ok(source) => source,
        Err(error) => {
            problems.push(error);
            return problems;
        }
    };
    if let Reading::Error(error) = source.read("vector(1)").await {
        problems.push(format!(
            "Prometheus at {} does not answer: {error}",
            spec.address
        ));
        return problems;
    }
    for (check, template) in queries {
        let revision = match check.tier {
            Tier::Model => &canary.model_revision,
            Tier::Worker => &canary.worker_revision,
        };
        let context = template::Context {
            namespace: &namespace,
            name: &name,
            revision,
            canary_revision: revision,
            stable_revision: revision,
            tier: check.tier,
            interval: analysis.interval.get(),
        };
        // No data yet is expected before traffic; a query Prometheus refuses is not.
        match template::render(&template, &context) {
            Ok(query) => {
                if let Reading::Error(error) = source.read(&query).await {
                    problems.push(format!("check {}: {error}", check.name));
                }
            }
            Err(error) => problems.push(format!("check {}: {error}", check.name)),
        }
    }
    problems
}

/// What the canary vLLM's warm-up looks like this round.
#[derive(Debug, PartialEq, Eq)]
enum Warmup {
    /// Nothing to warm: no rollout, a worker-only change, or no ready replica yet.
    NotApplicable,
    /// The canary already took traffic: warm-up gated its first traffic and is not asked again;
    /// from here on the gates judge it.
    Passed(String),
    /// Probe this revision.
    Probe(String),
}

fn warmup(
    status: &MineruDeploymentStatus,
    migrating: bool,
    desired: &Revisions,
    observed: &Observed,
) -> Warmup {
    if !new_model(status, migrating, desired) {
        return Warmup::NotApplicable;
    }
    let revision = &desired.model_revision;
    let serving = status.canary.as_ref() == Some(desired) && status.canary_weight.unwrap_or(0) > 0;
    if serving {
        return Warmup::Passed(revision.clone());
    }
    let ready = observed.model_ready.get(revision).copied().unwrap_or(0);
    if ready > 0 {
        Warmup::Probe(revision.clone())
    } else {
        Warmup::NotApplicable
    }
}

async fn analyse(
    client: &Client,
    io: &RolloutIo,
    md: &MineruDeployment,
    request: &AnalysisRequest,
    now: Timestamp,
) -> AnalysisRound {
    let namespace = md.namespace().unwrap_or_default();
    let name = md.name_any();
    let analysis = &md.spec.rollout.analysis;
    let needs_prometheus = request
        .checks
        .iter()
        .any(|check| matches!(check.source, Source::Query(_)));
    let results = match (&analysis.prometheus, needs_prometheus) {
        (_, false) => Vec::new(),
        (None, true) => error_results(request, "analysis.prometheus is not set"),
        (Some(spec), true) => {
            let credentials = match &spec.auth_secret_ref {
                Some(reference) => {
                    prometheus_credentials(client, &namespace, &reference.name).await
                }
                None => Ok(None),
            };
            match credentials.and_then(|credentials| {
                PrometheusSource::new(spec, credentials.as_ref()).map_err(|error| error.to_string())
            }) {
                Ok(source) => {
                    let subject = Subject {
                        namespace: &namespace,
                        name: &name,
                        interval: analysis.interval.get(),
                    };
                    round::run(request, subject, &source).await
                }
                Err(error) => error_results(request, &error),
            }
        }
    };
    let quality = match (&analysis.quality, &request.baseline, request.quality) {
        (Some(spec), Some(baseline), Some(count)) => {
            let worker_url = |revision: &str| {
                let service = labels::names::worker(&name, revision);
                io.resolver.url(&namespace, &service, WORKER_PORT)
            };
            let baseline_url = match (baseline, md.spec.rollout.legacy_backend()) {
                (Baseline::Stable(stable), _) => Ok(worker_url(&stable.worker_revision)),
                (Baseline::Legacy, Some(legacy)) => {
                    Ok(io.resolver.url(&namespace, &legacy.name, legacy.port))
                }
                (Baseline::Legacy, None) => Err("no legacy Service to compare with".to_owned()),
            };
            let canary_url = worker_url(&request.judged.worker_revision);
            let documents = golden_documents(client, &namespace, &spec.golden_documents)
                .await
                .map(|documents| {
                    quality::sample(documents, &request.judged.worker_revision, count)
                });
            let compared = match documents.and_then(|d| baseline_url.map(|url| (d, url))) {
                Ok((documents, baseline_url)) => quality::compare(
                    &io.http,
                    &baseline_url,
                    &canary_url,
                    &documents,
                    spec.min_similarity,
                    io.quality_timeout,
                )
                .await
                .map_err(|error| error.to_string()),
                Err(error) => Err(error),
            };
            compared.unwrap_or_else(|error| {
                // Not comparing is not a regression: the quality check stays unanswered and the
                // step holds until the next round.
                tracing::warn!(%error, "golden documents could not be compared");
                Vec::new()
            })
        }
        _ => Vec::new(),
    };
    AnalysisRound {
        at: now,
        results,
        quality,
    }
}

fn error_results(request: &AnalysisRequest, message: &str) -> Vec<CheckResult> {
    request
        .checks
        .iter()
        .filter(|check| matches!(check.source, Source::Query(_)))
        .map(|check| CheckResult {
            name: check.name.clone(),
            kind: check.kind,
            revision: match check.tier {
                Tier::Model => request.judged.model_revision.clone(),
                Tier::Worker => request.judged.worker_revision.clone(),
            },
            query: None,
            evaluation: Evaluation {
                verdict: Verdict::Error,
                value: None,
                stable_value: None,
                samples: None,
                message: Some(message.to_owned()),
            },
        })
        .collect()
}

/// One key of a Secret, `None` when the Secret or key is missing.
pub async fn secret_value(
    client: &Client,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<Option<String>, String> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|error| format!("Secret {namespace}/{name}: {}", api_message(&error)))?;
    Ok(secret
        .and_then(|secret| secret.data)
        .and_then(|data| data.get(key).cloned())
        .map(|bytes| String::from_utf8_lossy(&bytes.0).trim().to_owned()))
}

async fn prometheus_credentials(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Credentials>, String> {
    if let Some(token) = secret_value(client, namespace, name, "token").await? {
        return Ok(Some(Credentials::Bearer(token)));
    }
    let username = secret_value(client, namespace, name, "username").await?;
    let password = secret_value(client, namespace, name, "password").await?;
    match (username, password) {
        (Some(username), Some(password)) => Ok(Some(Credentials::Basic { username, password })),
        _ => Err(format!(
            "Secret {namespace}/{name} needs a `token` key, or `username` and `password`"
        )),
    }
}

/// What the apiserver said, without the wire format around it.
fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// The golden documents: every entry of the ConfigMap, or of every labelled one (keyed
/// `<ConfigMap>/<key>` then, as two ConfigMaps may use the same key).
async fn golden_documents(
    client: &Client,
    namespace: &str,
    source: &GoldenDocuments,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let api = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    let (config_maps, what) = match (&source.config_map_ref, &source.config_map_labels) {
        (Some(reference), _) => {
            let name = &reference.name;
            let config_map = api
                .get_opt(name)
                .await
                .map_err(|error| format!("ConfigMap {namespace}/{name}: {}", api_message(&error)))?
                .ok_or_else(|| format!("golden-document ConfigMap {namespace}/{name} not found"))?;
            (vec![config_map], format!("ConfigMap {namespace}/{name}"))
        }
        (None, labels) => {
            let selector = labels
                .iter()
                .flatten()
                .map(|(key, value)| format!("{key}={value}"))
                .collect::<Vec<_>>()
                .join(",");
            let list = api
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|error| {
                    format!(
                        "ConfigMaps {namespace} ({selector}): {}",
                        api_message(&error)
                    )
                })?;
            (
                list.items,
                format!("ConfigMaps in {namespace} labelled {selector}"),
            )
        }
    };
    let prefixed = config_maps.len() > 1;
    let documents: BTreeMap<String, Vec<u8>> = config_maps
        .into_iter()
        .flat_map(|config_map| {
            let name = config_map.name_any();
            // `kubectl create configmap --from-file` puts a PDF that happens to be valid UTF-8
            // under `data`, any other under `binaryData`.
            let text = config_map.data.unwrap_or_default().into_iter();
            let binary = config_map.binary_data.unwrap_or_default().into_iter();
            text.map(|(key, text)| (key, text.into_bytes()))
                .chain(binary.map(|(key, bytes)| (key, bytes.0)))
                .map(move |(key, pdf)| {
                    let key = if prefixed {
                        format!("{name}/{key}")
                    } else {
                        key
                    };
                    (key, pdf)
                })
        })
        .collect();
    if documents.is_empty() {
        return Err(format!("golden-document {what}: no documents"));
    }
    Ok(documents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revisions(model: &str, worker: &str) -> Revisions {
        Revisions {
            model_revision: model.into(),
            worker_revision: worker.into(),
        }
    }

    fn status(
        stable: Option<Revisions>,
        canary: Option<Revisions>,
        weight: Option<i32>,
    ) -> MineruDeploymentStatus {
        MineruDeploymentStatus {
            stable,
            canary,
            canary_weight: weight,
            ..MineruDeploymentStatus::default()
        }
    }

    #[test]
    fn only_a_ready_canary_vllm_before_its_first_traffic_is_probed() {
        let stable = Some(revisions("m-1", "w-1"));
        let canary = revisions("m-2", "w-2");
        let mut observed = Observed::default();
        observed.model_ready.insert("m-2".into(), 0);
        let warming = status(stable.clone(), Some(canary.clone()), Some(0));
        assert_eq!(
            warmup(&warming, false, &canary, &observed),
            Warmup::NotApplicable
        );
        observed.model_ready.insert("m-2".into(), 1);
        assert_eq!(
            warmup(&warming, false, &canary, &observed),
            Warmup::Probe("m-2".into())
        );
        // Once it took traffic, the gates judge it: a later failure is a breach, not "cold".
        let serving = status(stable.clone(), Some(canary.clone()), Some(10));
        assert_eq!(
            warmup(&serving, false, &canary, &observed),
            Warmup::Passed("m-2".into())
        );
        // A worker-only change keeps the stable vLLM: nothing to warm up.
        assert_eq!(
            warmup(&warming, false, &revisions("m-1", "w-2"), &observed),
            Warmup::NotApplicable
        );
        // The first deployment has no traffic to protect.
        assert_eq!(
            warmup(&status(None, None, None), false, &canary, &observed),
            Warmup::NotApplicable
        );
        // ... unless a legacy Service serves it: the migrated stack's vLLM warms up first.
        assert_eq!(
            warmup(
                &status(None, Some(canary.clone()), Some(0)),
                true,
                &canary,
                &observed
            ),
            Warmup::Probe("m-2".into())
        );
    }
}
