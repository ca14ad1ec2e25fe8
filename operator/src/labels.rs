//! Label keys, annotation keys and object names shared by every object the operator owns.

use std::collections::BTreeMap;

use mineru_crds::Tier;

/// `app.kubernetes.io/name`: always [`APP`].
pub const NAME: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`: the MineruDeployment's name.
pub const INSTANCE: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/managed-by`: always [`MANAGER`].
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// `app.kubernetes.io/component`: `vllm` or `worker`.
pub const COMPONENT: &str = "app.kubernetes.io/component";
/// `mineru.dev/tier`: `model` or `worker`.
pub const TIER: &str = "mineru.dev/tier";
/// `mineru.dev/revision`: the revision a pod template hash names; gates and scrape relabeling read it.
pub const REVISION: &str = "mineru.dev/revision";

/// Value of [`NAME`].
pub const APP: &str = "mineru";
/// Value of [`MANAGED_BY`], and the server-side apply field manager.
pub const MANAGER: &str = "mineru-operator";

/// Hash of the desired object last applied; equal hash means nothing to write.
pub const APPLIED_HASH: &str = "mineru.dev/applied-hash";
/// The tier spec a workload was built from, so a revision that no longer matches the spec (the
/// stable one during a rollout) can be rebuilt exactly.
pub const TEMPLATE: &str = "mineru.dev/template";

/// Longest MineruDeployment name whose derived names stay valid: a StatefulSet pod's
/// `controller-revision-hash` label is `<name>-vllm-m-xxxxxxxx-<10 chars>` and must fit in 63.
pub const MAX_NAME_LEN: usize = 36;

/// `vllm` or `worker`.
pub fn component(tier: Tier) -> &'static str {
    match tier {
        Tier::Model => "vllm",
        Tier::Worker => "worker",
    }
}

/// `model` or `worker`.
pub fn tier_value(tier: Tier) -> &'static str {
    match tier {
        Tier::Model => "model",
        Tier::Worker => "worker",
    }
}

/// Selects every pod of one tier of one MineruDeployment, across revisions.
pub fn tier_selector(instance: &str, tier: Tier) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_owned(), APP.to_owned()),
        (INSTANCE.to_owned(), instance.to_owned()),
        (TIER.to_owned(), tier_value(tier).to_owned()),
    ])
}

/// Selects the pods of one revision of one tier.
pub fn revision_selector(instance: &str, tier: Tier, revision: &str) -> BTreeMap<String, String> {
    let mut labels = tier_selector(instance, tier);
    labels.insert(REVISION.to_owned(), revision.to_owned());
    labels
}

/// The labels every owned object carries; `revision` is set on per-revision objects.
pub fn common(instance: &str, tier: Tier, revision: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = tier_selector(instance, tier);
    labels.insert(MANAGED_BY.to_owned(), MANAGER.to_owned());
    labels.insert(COMPONENT.to_owned(), component(tier).to_owned());
    if let Some(revision) = revision {
        labels.insert(REVISION.to_owned(), revision.to_owned());
    }
    labels
}

/// Label selector (as a query string) matching every object owned by one MineruDeployment.
pub fn owned_selector(instance: &str) -> String {
    format!("{INSTANCE}={instance},{MANAGED_BY}={MANAGER}")
}

/// Names of the objects derived from a MineruDeployment.
pub mod names {
    /// StatefulSet and ClusterIP Service of a model revision.
    pub fn vllm(instance: &str, model_revision: &str) -> String {
        format!("{instance}-vllm-{model_revision}")
    }

    /// Headless Service governing a model revision's StatefulSet.
    pub fn vllm_pods(instance: &str, model_revision: &str) -> String {
        format!("{instance}-vllm-{model_revision}-pods")
    }

    /// Deployment and Service of a worker revision.
    pub fn worker(instance: &str, worker_revision: &str) -> String {
        format!("{instance}-worker-{worker_revision}")
    }

    /// NetworkPolicy and PodDisruptionBudget of the GPU tier.
    pub fn vllm_tier(instance: &str) -> String {
        format!("{instance}-vllm")
    }

    /// PodDisruptionBudget of the CPU tier.
    pub fn worker_tier(instance: &str) -> String {
        format!("{instance}-worker")
    }

    /// In-cluster URL of a model revision's vLLM Service.
    pub fn vllm_url(instance: &str, model_revision: &str) -> String {
        format!(
            "http://{}:{}",
            vllm(instance, model_revision),
            crate::VLLM_PORT
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_objects_carry_all_common_labels() {
        let labels = common("docs", Tier::Model, Some("m-0123abcd"));
        assert_eq!(labels[NAME], "mineru");
        assert_eq!(labels[INSTANCE], "docs");
        assert_eq!(labels[MANAGED_BY], "mineru-operator");
        assert_eq!(labels[COMPONENT], "vllm");
        assert_eq!(labels[TIER], "model");
        assert_eq!(labels[REVISION], "m-0123abcd");
    }

    #[test]
    fn tier_wide_objects_have_no_revision_label() {
        let labels = common("docs", Tier::Worker, None);
        assert_eq!(labels[COMPONENT], "worker");
        assert!(!labels.contains_key(REVISION));
    }

    #[test]
    fn longest_allowed_name_keeps_statefulset_pod_labels_within_63() {
        let instance = "a".repeat(MAX_NAME_LEN);
        let sts = names::vllm(&instance, "m-0123abcd");
        // controller-revision-hash = "<sts>-<hash>", the hash is up to 10 characters.
        assert!(sts.len() + 1 + 10 <= 63, "{}", sts.len());
        assert!(names::vllm_pods(&instance, "m-0123abcd").len() <= 63);
    }
}
