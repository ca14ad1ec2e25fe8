//! PodDisruptionBudgets: one per tier, across revisions, so a node drain takes at most one
//! vLLM server and one worker of this deployment at a time.

use k8s_openapi::{
    api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use mineru_crds::Tier;

use super::Owner;
use crate::labels;

/// The PodDisruptionBudget `<name>-vllm` or `<name>-worker`.
pub fn desired(owner: &Owner, tier: Tier) -> PodDisruptionBudget {
    let instance = &owner.instance;
    let name = match tier {
        Tier::Model => labels::names::vllm_tier(instance),
        Tier::Worker => labels::names::worker_tier(instance),
    };
    PodDisruptionBudget {
        metadata: owner.meta(name, labels::common(instance, tier, None)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(labels::tier_selector(instance, tier)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::fixtures::owner;

    #[test]
    fn model_tier_budget_allows_one_vllm_pod_down() {
        let pdb = desired(&owner(), Tier::Model);
        assert_eq!(pdb.metadata.name.as_deref(), Some("docs-vllm"));
        let spec = pdb.spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        let selector = spec.selector.unwrap().match_labels.unwrap();
        assert_eq!(selector[labels::TIER], "model");
        assert!(!selector.contains_key(labels::REVISION));
    }

    #[test]
    fn worker_tier_budget_selects_workers_of_every_revision() {
        let pdb = desired(&owner(), Tier::Worker);
        assert_eq!(pdb.metadata.name.as_deref(), Some("docs-worker"));
        let selector = pdb.spec.unwrap().selector.unwrap().match_labels.unwrap();
        assert_eq!(selector[labels::TIER], "worker");
        assert_eq!(selector[labels::INSTANCE], "docs");
    }
}
