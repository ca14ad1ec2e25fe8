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
/// job store Secret, the webhook the platform must allow, the golden documents, Prometheus allowed, answering and
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
    if let Some(store) = &md.spec.worker.job_store {
        let reference = &store.url_secret_ref;
        match sources::secret_value(client, policy, &namespace, &reference.name, &reference.key)
            .await
        {
            Ok(Some(url)) if !url.is_empty() => {}
            Ok(Some(_)) => problems.push(format!(
                "job store Secret {namespace}/{} has an empty key {:?}",
                reference.name, reference.key
            )),
            Ok(None) => problems.push(format!(
                "job store Secret {namespace}/{} has no key {:?}",
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

#[cfg(test)]
mod tests {
    use http::Method;
    use serde_json::{Value, json};

    use super::*;
    use crate::reconcile::{apiserver::ApiServer, fixtures::Fixture};

    const SECRET: &str = "/api/v1/namespaces/parsing/secrets/mineru-jobs";

    fn secret(labels: Value, data: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "mineru-jobs", "namespace": "parsing", "labels": labels},
            "data": data,
        })
    }

    #[tokio::test]
    async fn a_job_store_secret_without_its_key_holds_the_canary_with_the_reason() {
        let readable = json!({"mineru.dev/operator-readable": "true"});
        // "cG9zdGdyZXM6Ly9ob3N0L2pvYnM=" is postgres://host/jobs.
        let url = json!({"url": "cG9zdGdyZXM6Ly9ob3N0L2pvYnM="});
        let cases: Vec<(&str, ApiServer, Vec<String>)> = vec![
            (
                "holding the key",
                ApiServer::default().with_object(SECRET, secret(readable.clone(), url.clone())),
                vec![],
            ),
            (
                "without the key",
                ApiServer::default().with_object(
                    SECRET,
                    secret(readable.clone(), json!({"uri": "eA=="})),
                ),
                vec![r#"job store Secret parsing/mineru-jobs has no key "url""#.to_owned()],
            ),
            (
                "with the key empty",
                ApiServer::default().with_object(SECRET, secret(readable.clone(), json!({"url": ""}))),
                vec![r#"job store Secret parsing/mineru-jobs has an empty key "url""#.to_owned()],
            ),
            (
                "missing",
                ApiServer::default().failing_once(Method::GET, SECRET, 404),
                vec![r#"job store Secret parsing/mineru-jobs has no key "url""#.to_owned()],
            ),
            (
                "without the label the platform requires",
                ApiServer::default().with_object(SECRET, secret(json!({}), url.clone())),
                vec!["Secret parsing/mineru-jobs is not labelled mineru.dev/operator-readable=true, which the operator requires before it reads a Secret a MineruDeployment names (kubectl label secret mineru-jobs mineru.dev/operator-readable=true)".to_owned()],
            ),
        ];
        let policy = OutboundPolicy::new(
            &["*"],
            Some(("mineru.dev/operator-readable".into(), "true".into())),
        )
        .unwrap();
        let mut md = MineruDeployment::test();
        md.spec.worker.job_store = Some(
            serde_json::from_value(json!({
                "urlSecretRef": {"name": "mineru-jobs", "key": "url"},
                "egress": [{"podSelector": {"matchLabels": {"app": "postgres"}}}],
            }))
            .unwrap(),
        );
        let canary = Revisions {
            model_revision: "m-00000000".into(),
            worker_revision: "w-00000000".into(),
        };
        for (case, server, expected) in cases {
            let (client, calls) = server.start();
            let problems = check(&client, &policy, &md, &canary, Timestamp::UNIX_EPOCH).await;
            drop(client);
            assert_eq!(problems, expected, "{case}");
            let calls = calls.await.unwrap();
            assert!(
                calls.iter().all(|c| !c.is_write()),
                "{case}: preflight only reads"
            );
        }
    }
}
