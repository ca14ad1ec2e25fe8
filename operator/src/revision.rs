//! Revisions: a stable short hash of a tier's pod template.
//!
//! The hash is sha256 over canonical JSON (object keys sorted, no whitespace), so it depends
//! only on the template's content, never on field order or the serializer's map type. The
//! revision label itself is added after hashing; it cannot be part of what it names.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use mineru_crds::ModelSpec;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::reconcile::{WorkerTemplate, deployment, statefulset};

/// Hex characters of the hash kept in a revision name.
const REVISION_HEX: usize = 8;

/// The model revision (`m-<8 hex>`) of a model spec: its pod template and, because a
/// StatefulSet's volumeClaimTemplates cannot be changed in place, its cache claim too.
pub fn model(instance: &str, spec: &ModelSpec) -> Result<String> {
    #[derive(Serialize)]
    struct Hashed {
        template: PodTemplateSpec,
        claims: Vec<k8s_openapi::api::core::v1::PersistentVolumeClaim>,
    }
    let hashed = Hashed {
        template: statefulset::pod_template(instance, spec),
        claims: statefulset::volume_claim_templates(instance, spec),
    };
    Ok(format!("m-{}", &hash(&hashed)?[..REVISION_HEX]))
}

/// The worker revision (`w-<8 hex>`): its pod template, which names the vLLM Service it calls,
/// so a new model revision makes a new worker revision too.
pub fn worker(instance: &str, template: &WorkerTemplate) -> Result<String> {
    let pod = deployment::pod_template(instance, template);
    Ok(format!("w-{}", &hash(&pod)?[..REVISION_HEX]))
}

/// Full hex sha256 of the canonical JSON of `value`.
pub fn hash(value: &impl Serialize) -> Result<String> {
    let value = serde_json::to_value(value).map_err(|source| Error::Serialize {
        what: "object to hash",
        source,
    })?;
    let mut canonical = String::new();
    write_canonical(&value, &mut canonical);
    let digest = Sha256::digest(canonical.as_bytes());
    Ok(digest.iter().map(|byte| format!("{byte:02x}")).collect())
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (index, (key, value)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::fixtures::{model_spec, worker_spec};

    fn worker_template(model_revision: &str) -> WorkerTemplate {
        WorkerTemplate::new(&worker_spec(), &model_spec(), model_revision)
    }

    #[test]
    fn model_revision_has_prefix_and_eight_hex_digits() {
        let revision = model("docs", &model_spec()).unwrap();
        assert!(revision.starts_with("m-"), "{revision}");
        assert_eq!(revision.len(), 10);
        assert!(
            revision[2..]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn revisions_are_pinned_for_a_fixed_spec() {
        // Pinned values: the hash must not depend on the process, the run or the map type. A
        // change here means every running deployment gets new revisions on upgrade: only
        // accept it when the pod templates changed on purpose.
        assert_eq!(model("docs", &model_spec()).unwrap(), "m-1739560c");
        assert_eq!(
            worker("docs", &worker_template("m-00000000")).unwrap(),
            "w-7756402f"
        );
    }

    #[test]
    fn hash_ignores_key_order() {
        assert_eq!(
            hash(&serde_json::json!({"b": 1, "a": [true, null]})).unwrap(),
            hash(&serde_json::json!({"a": [true, null], "b": 1})).unwrap()
        );
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let mut out = String::new();
        write_canonical(
            &serde_json::json!({"b": {"d": 1, "c": "x"}, "a": [2, 1]}),
            &mut out,
        );
        assert_eq!(out, r#"{"a":[2,1],"b":{"c":"x","d":1}}"#);
    }

    #[test]
    fn model_revision_changes_with_the_image() {
        let mut changed = model_spec();
        changed.image = "vllm/vllm-openai:v0.11.1".into();
        assert_ne!(
            model("docs", &model_spec()).unwrap(),
            model("docs", &changed).unwrap()
        );
    }

    #[test]
    fn model_revision_changes_with_the_model() {
        let mut changed = model_spec();
        changed.model = "opendatalab/MinerU2.5-2510-1.2B".into();
        assert_ne!(
            model("docs", &model_spec()).unwrap(),
            model("docs", &changed).unwrap()
        );
    }

    #[test]
    fn model_revision_changes_with_extra_args() {
        let mut changed = model_spec();
        changed.extra_args = vec!["--enforce-eager".into()];
        assert_ne!(
            model("docs", &model_spec()).unwrap(),
            model("docs", &changed).unwrap()
        );
    }

    #[test]
    fn model_revision_changes_with_the_cache_claim() {
        let mut changed = model_spec();
        changed.cache = Some(mineru_crds::ModelCache {
            size: k8s_openapi::apimachinery::pkg::api::resource::Quantity("20Gi".into()),
            storage_class_name: None,
        });
        assert_ne!(
            model("docs", &model_spec()).unwrap(),
            model("docs", &changed).unwrap()
        );
    }

    #[test]
    fn replicas_are_not_part_of_a_revision() {
        let mut changed = model_spec();
        changed.replicas = 7;
        assert_eq!(
            model("docs", &model_spec()).unwrap(),
            model("docs", &changed).unwrap()
        );
    }

    #[test]
    fn worker_revision_has_prefix_and_eight_hex_digits() {
        let revision = worker("docs", &worker_template("m-00000000")).unwrap();
        assert!(
            revision.starts_with("w-") && revision.len() == 10,
            "{revision}"
        );
    }

    #[test]
    fn worker_revision_changes_when_its_vllm_target_changes() {
        assert_ne!(
            worker("docs", &worker_template("m-00000000")).unwrap(),
            worker("docs", &worker_template("m-11111111")).unwrap()
        );
    }

    #[test]
    fn worker_revision_changes_with_the_worker_image() {
        let mut spec = worker_spec();
        spec.image = "registry.example/mineru-worker:0.2.0".into();
        let changed = WorkerTemplate::new(&spec, &model_spec(), "m-00000000");
        assert_ne!(
            worker("docs", &worker_template("m-00000000")).unwrap(),
            worker("docs", &changed).unwrap()
        );
    }

    #[test]
    fn worker_revision_follows_the_job_store_secret_but_not_where_the_database_is() {
        let with_store = |name: &str, port: i32| {
            let mut spec = worker_spec();
            spec.job_store = Some(
                serde_json::from_value(serde_json::json!({
                    "urlSecretRef": {"name": name, "key": "url"},
                    "egress": [{"podSelector": {"matchLabels": {"app": "postgres"}}}],
                    "port": port,
                }))
                .unwrap(),
            );
            worker(
                "docs",
                &WorkerTemplate::new(&spec, &model_spec(), "m-00000000"),
            )
            .unwrap()
        };
        let without = worker("docs", &worker_template("m-00000000")).unwrap();
        assert_ne!(with_store("mineru-jobs", 5432), without);
        assert_ne!(
            with_store("mineru-jobs", 5432),
            with_store("other-db", 5432)
        );
        assert_eq!(
            with_store("mineru-jobs", 5432),
            with_store("mineru-jobs", 6432),
            "the NetworkPolicy changes at once, no rollout"
        );
    }

    #[test]
    fn worker_revision_ignores_worker_replicas() {
        let mut spec = worker_spec();
        spec.replicas = 9;
        let changed = WorkerTemplate::new(&spec, &model_spec(), "m-00000000");
        assert_eq!(
            worker("docs", &worker_template("m-00000000")).unwrap(),
            worker("docs", &changed).unwrap()
        );
    }
}
