//! Preflight: what a canary needs before its first traffic, checked while it starts so that a
//! missing Secret or a query Prometheus refuses holds the rollout at 0% with the reason, rather
//! than surfacing as errors mid-step.

use k8s_openapi::{api::core::v1::Service, jiff::Timestamp};
use kube::{Api, Client, ResourceExt};
use mineru_crds::{LegacyRole, MineruDeployment, Revisions};

use crate::{
    gates::{
        self,
        reading::Reading,
        template::{self, Context},
    },
    notify,
    outbound::OutboundPolicy,
    sources::{self, api_message},
};

/// Every problem, each a sentence: the legacy Service when migrating, the API key Secret, the
/// webhook the platform must allow, the golden documents, Prometheus allowed, answering and
/// accepting every check's queries.
pub async fn check(
    client: &Client,
    policy: &OutboundPolicy,
    md: &MineruDeployment,
    canary: &Revisions,
    now: Timestamp,
) -> Vec<String> {
    let namespace = md.namespace().unwrap_or_default();
    let name = md.name_any();
    let status = md.status.clone().unwrap_or_default();
    let migrating = md.spec.rollout.legacy_backend().is_some() && status.stable.is_none();
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
        match sources::secret_value(client, policy, &namespace, &reference.name, &reference.key)
            .await
        {
            Ok(Some(_)) => {}
            Ok(None) => problems.push(format!(
                "API key Secret {namespace}/{} has no key {:?}",
                reference.name, reference.key
            )),
            Err(error) => problems.push(error),
        }
    }
    if let Some(notifications) = &md.spec.rollout.notifications {
        problems.extend(notify::refusal(client, policy, md, &notifications.webhook).await);
    }
    let analysis = &md.spec.rollout.analysis;
    if let Some(quality) = &analysis.quality
        && let Err(error) =
            sources::golden_documents(client, &namespace, &quality.golden_documents).await
    {
        problems.push(error);
    }
    let migrating_role = status.legacy == Some(LegacyRole::Serving) || migrating;
    let checks: Vec<_> = gates::checks(analysis, &md.spec.rollout.steps, migrating_role)
        .into_iter()
        .filter(|check| check.source.reads_prometheus())
        .collect();
    if checks.is_empty() {
        return problems;
    }
    let source = match sources::prometheus(client, policy, md).await {
        Ok(source) => source,
        Err(error) => {
            problems.push(error);
            return problems;
        }
    };
    let at = now.as_second();
    if let Reading::Error(error) = source.read("vector(1)", at).await {
        let address = analysis
            .prometheus
            .as_ref()
            .map_or("", |p| p.address.as_str());
        problems.push(format!("Prometheus at {address} does not answer: {error}"));
        return problems;
    }
    let interval = analysis.interval.get();
    for check in checks {
        let revision = canary.of(check.tier);
        let context = Context {
            namespace: &namespace,
            name: &name,
            revision,
            canary_revision: revision,
            stable_revision: revision,
            tier: check.tier,
            interval,
            window: interval,
        };
        // No data yet is expected before traffic; a query Prometheus refuses is not.
        for template in check.source.templates() {
            match template::render(template, &context) {
                Ok(query) => {
                    let reading = source.read_as(&check.source, &query, at).await;
                    if let Reading::Error(error) = reading {
                        problems.push(format!("check {}: {error}", check.name));
                    }
                }
                Err(error) => problems.push(format!("check {}: {error}", check.name)),
            }
        }
    }
    problems
}
