//! Where a rollout's facts come from, read the same way by preflight and by analysis: the
//! Secrets the spec names, the golden-document ConfigMaps, and the one Prometheus source built
//! from `analysis.prometheus`. Secrets and the Prometheus address pass the platform's
//! [`OutboundPolicy`] first.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client, ResourceExt, api::ListParams};
use mineru_crds::{GoldenDocuments, MineruDeployment};

use crate::{
    gates::prometheus::{Credentials, PrometheusSource},
    outbound::OutboundPolicy,
};

/// What the apiserver said, without the wire format around it.
pub fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// A Secret the spec names, `None` when it is missing; `Err` when it cannot be read or the
/// policy does not let the operator use it.
pub async fn secret(
    client: &Client,
    policy: &OutboundPolicy,
    namespace: &str,
    name: &str,
) -> Result<Option<Secret>, String> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|error| format!("Secret {namespace}/{name}: {}", api_message(&error)))?;
    if let Some(secret) = &secret {
        policy.check_secret(secret)?;
    }
    Ok(secret)
}

/// One key of a Secret, `None` when the Secret or key is missing.
pub async fn secret_value(
    client: &Client,
    policy: &OutboundPolicy,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<Option<String>, String> {
    Ok(secret(client, policy, namespace, name)
        .await?
        .and_then(|secret| secret.data)
        .and_then(|data| data.get(key).cloned())
        .map(|bytes| String::from_utf8_lossy(&bytes.0).trim().to_owned()))
}

/// The vLLM API key the spec names, when it names one and it can be read.
pub async fn api_key(
    client: &Client,
    policy: &OutboundPolicy,
    md: &MineruDeployment,
) -> Option<String> {
    let reference = md.spec.model.api_key_secret_ref.as_ref()?;
    let namespace = md.namespace().unwrap_or_default();
    secret_value(client, policy, &namespace, &reference.name, &reference.key)
        .await
        .ok()
        .flatten()
}

async fn prometheus_credentials(
    client: &Client,
    policy: &OutboundPolicy,
    namespace: &str,
    name: &str,
) -> Result<Option<Credentials>, String> {
    let value = |key| secret_value(client, policy, namespace, name, key);
    if let Some(token) = value("token").await? {
        return Ok(Some(Credentials::Bearer(token)));
    }
    let username = value("username").await?;
    let password = value("password").await?;
    match (username, password) {
        (Some(username), Some(password)) => Ok(Some(Credentials::Basic { username, password })),
        _ => Err(format!(
            "Secret {namespace}/{name} needs a `token` key, or `username` and `password`"
        )),
    }
}

/// The Prometheus source of `analysis.prometheus`, with its credentials; why not, in words. The
/// address is checked against the policy before any Secret is read for it.
pub async fn prometheus(
    client: &Client,
    policy: &OutboundPolicy,
    md: &MineruDeployment,
) -> Result<PrometheusSource, String> {
    let Some(spec) = &md.spec.rollout.analysis.prometheus else {
        return Err("analysis.prometheus is not set but the checks need it".to_owned());
    };
    policy.check_url("analysis.prometheus.address", &spec.address)?;
    let namespace = md.namespace().unwrap_or_default();
    let credentials = match &spec.auth_secret_ref {
        Some(reference) => {
            prometheus_credentials(client, policy, &namespace, &reference.name).await?
        }
        None => None,
    };
    PrometheusSource::new(spec, credentials.as_ref()).map_err(|error| error.to_string())
}

/// The golden documents: every entry of the ConfigMap, or of every labelled one (keyed
/// `<ConfigMap>/<key>` then, as two ConfigMaps may use the same key).
pub async fn golden_documents(
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
